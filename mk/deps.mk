# mk/deps.mk: what the build needs on the machine. 'make deps' installs what
# is missing with apt-get, then checks that every command the build, the
# tests and 'make run' call is on PATH (mk/deps.sh, from the one list in
# mk/deps.list); it is quick when nothing is missing, and the other targets
# run it first.

.PHONY: deps
deps:
	@mk/deps.sh
	@go mod download
