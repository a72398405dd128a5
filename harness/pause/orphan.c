/*
 * orphan: leave a child behind for the container's PID 1 to reap.
 *
 * Forks a child that sleeps SECONDS (default 2) and exits 0, prints the
 * child's PID and exits at once, so the child is reparented to PID 1 of its
 * PID namespace. image-test.sh runs it with `ctr tasks exec` in the pause
 * container: the child must never be left a zombie.
 *
 * Build: musl-gcc -static -Os -o orphan orphan.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    unsigned seconds = argc > 1 ? (unsigned)atoi(argv[1]) : 2;
    pid_t child = fork();
    if (child < 0) {
        perror("orphan: fork");
        return 1;
    }
    if (child == 0) {
        /* Let go of the exec's stdio, or `ctr tasks exec` waits for it. */
        close(STDIN_FILENO);
        close(STDOUT_FILENO);
        close(STDERR_FILENO);
        sleep(seconds);
        _exit(0);
    }
    printf("%d\n", (int)child);
    return 0;
}
