/* The crash-time half of a Crashpad client on Linux, as CrashpadClient::StartHandlerAtCrash sets
 * it up: the crash signal's handler notes where the signal's details are, starts crashpad_handler
 * with --trace-parent-with-exception=<address of that note>, waits while the handler reads this
 * process through ptrace and writes the minidump, then lets the signal kill the process.
 *
 * install_crash_handler(argc, argv) takes the program's arguments as HANDLER [ARGUMENT...].
 */
#ifndef SYMBOLON_TEST_CRASH_CLIENT_H
#define SYMBOLON_TEST_CRASH_CLIENT_H

#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* What the handler reads out of this process: Crashpad's ExceptionInformation, packed. */
struct __attribute__((packed)) exception_information {
    uint64_t siginfo_address;
    uint64_t context_address;
    int32_t thread_id;
};

static struct exception_information exception_information;
static char **handler_argv;

static void say(const char *text) {
    ssize_t ignored = write(STDERR_FILENO, text, strlen(text));
    (void)ignored;
}

static void on_crash(int signo, siginfo_t *info, void *context) {
    int saved_errno = errno;
    exception_information.siginfo_address = (uintptr_t)info;
    exception_information.context_address = (uintptr_t)context;
    exception_information.thread_id = (int32_t)syscall(SYS_gettid);
    prctl(PR_SET_PTRACER, getpid(), 0, 0, 0);
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    pid_t child = fork();
    if (child == 0) {
        execv(handler_argv[0], handler_argv);
        _exit(127);
    }
    int status = 0;
    if (child > 0) {
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
    }
    if (child < 0)
        say("crash client: fork failed\n");
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        say("crash client: crashpad_handler exited with 0\n");
    else
        say("crash client: crashpad_handler failed\n");
    /* Returning re-runs the faulting instruction, which the default action now answers. */
    signal(signo, SIG_DFL);
    errno = saved_errno;
}

static int install_crash_handler(int argc, char **argv) {
    if (argc < 2) {
        say("usage: PROGRAM HANDLER [HANDLER_ARGUMENT...]\n");
        return -1;
    }
    static char trace_parent[64];
    snprintf(trace_parent, sizeof trace_parent, "--trace-parent-with-exception=%p",
             (void *)&exception_information);
    handler_argv = calloc((size_t)argc + 1, sizeof *handler_argv);
    if (handler_argv == NULL)
        return -1;
    for (int i = 1; i < argc; i++)
        handler_argv[i - 1] = argv[i];
    handler_argv[argc - 1] = trace_parent;

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_crash;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0)
        return -1;
    return 0;
}

#endif
