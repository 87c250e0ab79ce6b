// SPDX-License-Identifier: GPL-2.0
/*
 * examples: runs the EXAMPLES programs of the KMES man pages, built beside
 * it by mk/selftests.sh, on the running kernel and prints KTAP: a test
 * passes when the program exits as the page shows and prints what the page
 * shows (for kmes_attach, whose events differ from boot to boot: lines of
 * the page's form, among them the events the other examples emitted).
 */
#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[PATH_MAX];

/*
 * run runs the program name of dir with argv, and returns its exit status
 * (-1 if it did not exit) and its output, stdout and stderr together.
 */
static int run(char *const argv[], char **out)
{
	char path[PATH_MAX + 64];
	size_t len = 0, cap = 4096;
	int fds[2], status;
	ssize_t n;
	pid_t pid;

	snprintf(path, sizeof(path), "%s/%s", dir, argv[0]);
	fflush(stdout);
	*out = malloc(cap);
	if (!*out || pipe(fds) == -1)
		return -1;
	pid = fork();
	if (pid == -1)
		return -1;
	if (pid == 0) {
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		execv(path, argv);
		fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		if (len + 1 == cap) {
			cap *= 2;
			*out = realloc(*out, cap);
			if (!*out)
				return -1;
		}
		n = read(fds[0], *out + len, cap - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	(*out)[len] = '\0';
	close(fds[0]);
	if (waitpid(pid, &status, 0) == -1 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static int num, failed;

/* diag prints text as KTAP diagnostics, each line indented. */
static void diag(const char *text)
{
	for (const char *l = text; *l;) {
		const char *nl = strchr(l, '\n');
		int n = nl ? nl - l : (int)strlen(l);

		printf("#   %.*s\n", n, l);
		l += n + (nl != NULL);
	}
}

/* result prints test num's KTAP line and, when it failed, why and the
 * program's output as diagnostics. */
static void result(const char *name, const char *why, const char *out)
{
	num++;
	if (!why) {
		printf("ok %d %s\n", num, name);
		return;
	}
	failed++;
	printf("# %s: %s; its output:\n", name, why);
	diag(out);
	printf("not ok %d %s\n", num, name);
}

/* expect runs argv and checks its exit status and its whole output. */
static void expect(const char *name, char *const argv[], int want_exit, const char *want_out)
{
	char why[128], *out;
	int exit = run(argv, &out);

	if (exit != want_exit)
		snprintf(why, sizeof(why), "exit status %d, want %d", exit, want_exit);
	else if (strcmp(out, want_out)) {
		snprintf(why, sizeof(why), "the output is not the page's");
		printf("# %s: the page's output:\n", name);
		diag(want_out);
	}
	result(name, exit != want_exit || strcmp(out, want_out) ? why : NULL, out ? out : "");
	free(out);
}

/* The events the examples above emitted, as kmes_attach prints them. */
static const char *const emitted[] = {
	" example.hello (19 bytes)",
	" example.first (2 bytes)",
	" example.second (2 bytes)",
	" example.ok (2 bytes)",
};

static void attach(void)
{
	char *argv[] = { "kmes_attach", NULL }, *out, *why = NULL, buf[128];
	int exit = run(argv, &out), found[4] = { 0 };
	regex_t form;

	if (regcomp(&form, "^cpu [0-9]+ seq [0-9]+ [^ ]+ \\([0-9]+ bytes\\)$", REG_EXTENDED | REG_NOSUB)) {
		result("kmes_attach", "regcomp failed", "");
		return;
	}
	if (exit != 0) {
		snprintf(buf, sizeof(buf), "exit status %d, want 0", exit);
		why = buf;
	}
	for (char *l = out; !why && l && *l;) {
		char *nl = strchr(l, '\n');

		if (!nl) {
			why = "the last line does not end in a newline";
			break;
		}
		*nl = '\0';
		if (regexec(&form, l, 0, NULL, 0)) {
			snprintf(buf, sizeof(buf), "line \"%.60s\" is not \"cpu N seq N TYPE (N bytes)\"", l);
			why = buf;
		}
		for (size_t i = 0; i < 4; i++) {
			size_t n = strlen(l), m = strlen(emitted[i]);

			found[i] |= n >= m && !strcmp(l + n - m, emitted[i]);
		}
		*nl = '\n';
		l = nl + 1;
	}
	for (size_t i = 0; !why && i < 4; i++) {
		if (!found[i]) {
			snprintf(buf, sizeof(buf), "no line ends in \"%s\"", emitted[i]);
			why = buf;
		}
	}
	/* The rings hold every event since boot: show the output's end. */
	result("kmes_attach", why, out && strlen(out) > 2000 ? out + strlen(out) - 2000 : out ? out : "");
	regfree(&form);
	free(out);
}

int main(int argc, char *argv[])
{
	char *emit[] = { "kmes_emit", "hello, world", NULL };
	char *batch[] = { "kmes_emit_batch", "example.first", "example.second", NULL };
	char *invalid[] = { "kmes_emit_batch", "example.ok", "\xff", NULL };

	(void)argc;
	snprintf(dir, sizeof(dir), "%s", argv[0]);
	if (strrchr(dir, '/'))
		*strrchr(dir, '/') = '\0';
	else
		strcpy(dir, ".");
	printf("TAP version 13\n1..4\n");
	expect("kmes_emit", emit, 0, "");
	expect("kmes_emit_batch", batch, 0, "2 events emitted\n");
	expect("kmes_emit_batch_invalid_utf8", invalid, 1,
	       "kmes_emit_batch: kmes_emit_batch: 1 of 2 events emitted: Invalid argument\n");
	attach();
	fflush(stdout);
	return failed ? 1 : 0;
}
