/* The pod sandbox's pause process for the e2e real node (registry.k8s.io is out of reach).
 *
 * PID 1 of the pod's sandbox: holds the namespaces open, sleeps until SIGTERM or
 * SIGINT, and reaps any zombie re-parented to it.  Built static, run as 65535:
 *   gcc -static -Os -s -o pause pause.c
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
    static const char msg[] = "pause: shutting down\n";
    (void)sig;
    (void)!write(2, msg, sizeof msg - 1); /* async-signal-safe, unlike stdio */
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (logicbundle-e2e) 3.10");
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "pause: warning, not running as PID 1\n");
    }
    struct sigaction term = {.sa_handler = stop}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
    if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
        sigaction(SIGCHLD, &child, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
    fprintf(stderr, "pause: error, infinite loop terminated\n");
    return 42;
}
