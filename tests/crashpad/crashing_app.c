/* An application that crashes, set up as Crashpad's client sets one up on Linux when it starts
 * the handler only at crash time (CrashpadClient::StartHandlerAtCrash): the crash signal's
 * handler notes where the signal's details are, starts crashpad_handler with
 * --trace-parent-with-exception=<address of that note>, waits while the handler reads this
 * process through ptrace and writes (and uploads) the minidump, then lets the signal kill it.
 *
 * Usage: crashing_app HANDLER [HANDLER_ARGUMENT...]
 * It writes to CRASH_ADDRESS at once, and reports on stderr how the handler ended.
 */
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

/* Unmapped, so the write faults with SEGV_MAPERR at this address. */
#ifndef CRASH_ADDRESS
#define CRASH_ADDRESS 0x5a0
#endif

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

static void say_number(int value) {
    char digits[16];
    char *end = digits + sizeof digits - 1;
    unsigned magnitude = value < 0 ? -(unsigned)value : (unsigned)value;
    *end = '\0';
    do {
        *--end = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0)
        *--end = '-';
    say(end);
}

static void on_crash(int signo, siginfo_t *info, void *context) {
    int saved_errno = errno;
    exception_information.siginfo_address = (uintptr_t)info;
    exception_information.context_address = (uintptr_t)context;
    exception_information.thread_id = (int32_t)syscall(SYS_gettid);

    /* Under Yama's ptrace_scope 1 only a process named here (and its children) may trace this
     * one; EINVAL without Yama. A process that changed credentials is not dumpable, and then
     * not traceable either. */
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
    if (child < 0) {
        say("crashing_app: fork failed\n");
    } else if (WIFEXITED(status)) {
        say("crashing_app: crashpad_handler exited with ");
        say_number(WEXITSTATUS(status));
        say("\n");
    } else {
        say("crashing_app: crashpad_handler killed by signal ");
        say_number(WTERMSIG(status));
        say("\n");
    }

    /* Returning re-runs the faulting write, which the default action now answers. */
    signal(signo, SIG_DFL);
    errno = saved_errno;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        say("usage: crashing_app HANDLER [HANDLER_ARGUMENT...]\n");
        return 2;
    }

    /* Everything the signal handler needs is made now: it may not allocate. */
    static char trace_parent[64];
    snprintf(trace_parent, sizeof trace_parent, "--trace-parent-with-exception=%p",
             (void *)&exception_information);
    handler_argv = calloc((size_t)argc + 1, sizeof *handler_argv);
    if (handler_argv == NULL)
        return 1;
    for (int i = 1; i < argc; i++)
        handler_argv[i - 1] = argv[i];
    handler_argv[argc - 1] = trace_parent;

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_crash;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0) {
        perror("sigaction");
        return 1;
    }

    volatile int *volatile target = (volatile int *)CRASH_ADDRESS;
    *target = 1;
    say("crashing_app: still alive after the crash\n");
    return 1;
}
