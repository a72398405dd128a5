/*
 * pause: the process that holds a pod sandbox's namespaces open.
 *
 * It does nothing but wait. SIGINT and SIGTERM end it with status 0 (the
 * runtime stops a sandbox that way); as PID 1 of the pod's PID namespace it
 * reaps every child that is reparented to it, so no zombie is left behind.
 * `pause -v` prints the version and exits.
 *
 * Build: musl-gcc -static -Os -s -o pause pause.c   (or gcc -static)
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PAUSE_VERSION
#define PAUSE_VERSION "3.10"
#endif

static void say(const char *msg) {
    /* write(2) is async-signal-safe; stdio is not. */
    ssize_t ignored = write(STDERR_FILENO, msg, strlen(msg));
    (void)ignored;
}

static void on_stop(int signo) {
    say(signo == SIGTERM ? "pause: SIGTERM, exiting\n" : "pause: SIGINT, exiting\n");
    _exit(0);
}

static void on_child(int signo) {
    (void)signo;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int signo, void (*fn)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0) {
        perror("pause: sigaction");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "-v") == 0) {
        printf("pause %s (kube-fencer harness)\n", PAUSE_VERSION);
        return 0;
    }
    if (argc != 1) {
        fprintf(stderr, "usage: %s [-v]\n", argv[0]);
        return 2;
    }
    if (getpid() != 1) {
        say("pause: warning: not PID 1, orphans elsewhere are not reaped here\n");
    }
    if (handle(SIGINT, on_stop, 0) || handle(SIGTERM, on_stop, 0) ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART)) {
        return 1;
    }
    for (;;) {
        pause();
    }
}
