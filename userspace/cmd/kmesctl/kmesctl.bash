# bash completion for kmesctl (make install puts it in
# share/bash-completion/completions/kmesctl). Plain bash: it needs none
# of bash-completion's helpers. doc_test.go checks that it offers every
# flag each command defines.

_kmesctl() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=
	((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
	# --flag=value: bash splits it at the =, as COMP_WORDBREAKS says.
	if [[ $cur == = ]]; then
		cur=
	elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then
		prev=${COMP_WORDS[COMP_CWORD - 2]}
	fi
	COMPREPLY=()

	if ((COMP_CWORD == 1)); then
		COMPREPLY=($(compgen -W "emit tail stat bench query help --help --version" -- "$cur"))
		return
	fi
	local flags args=
	case ${COMP_WORDS[1]} in
	emit) flags="--raw" args=yes ;;
	tail) flags="-f --follow -n --lines -o --output --type --cpu --origin --since --until --count" ;;
	stat) flags="--json --watch --interval" ;;
	bench) flags="--events --size --batch" ;;
	query) flags="--db -o --output --type --cpu --origin --since --until" ;;
	*) return ;;
	esac

	# The value of the flag before.
	case $prev in
	-o | --output)
		COMPREPLY=($(compgen -W "json json-pretty short" -- "$cur"))
		return
		;;
	-n | --lines)
		COMPREPLY=($(compgen -W "all" -- "$cur"))
		return
		;;
	--since | --until)
		COMPREPLY=($(compgen -W "now today yesterday tomorrow" -- "$cur"))
		return
		;;
	--db)
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	--type | --cpu | --origin | --count | --interval | --events | --size | --batch)
		return
		;;
	esac
	# emit's arguments (TYPE, JSON) are the user's; the others take none.
	if [[ $cur == -* || -z $args ]]; then
		COMPREPLY=($(compgen -W "$flags --help" -- "$cur"))
	fi
}
complete -F _kmesctl kmesctl
