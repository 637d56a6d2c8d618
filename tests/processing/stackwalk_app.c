/* An application that crashes several calls deep while other threads wait, each several calls
 * deep too: three threads blocked in the C library (a read, a sleep, a condition wait) and one
 * spinning in the application's own code. The crash passes through libmid, a library whose
 * symbols the tests may withhold.
 *
 * Usage: stackwalk_app HANDLER [HANDLER_ARGUMENT...]
 */
#include "crash_client.h"

#include <pthread.h>
#include <time.h>

#include "libmid.h"

#ifndef CRASH_ADDRESS
#define CRASH_ADDRESS 0x5a0
#endif

/* Kept in memory so that calls keep their results and are not folded away. */
volatile int sink;
volatile int stop;
static pthread_barrier_t parked;
static int pipe_fds[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;

__attribute__((noinline)) static int reader_level3(int n) {
    char byte;
    pthread_barrier_wait(&parked);
    ssize_t got = read(pipe_fds[0], &byte, 1);
    return (int)got + n;
}
__attribute__((noinline)) static int reader_level2(int n) { int r = reader_level3(n + 1); sink += r; return r * 2; }
__attribute__((noinline)) static int reader_level1(int n) { int r = reader_level2(n + 1); sink += r; return r * 3; }

__attribute__((noinline)) static int sleeper_level2(int n) {
    struct timespec forever = {3600, 0};
    pthread_barrier_wait(&parked);
    nanosleep(&forever, NULL);
    return n;
}
__attribute__((noinline)) static int sleeper_level1(int n) { int r = sleeper_level2(n + 1); sink += r; return r * 5; }

__attribute__((noinline)) static int waiter_level2(int n) {
    pthread_mutex_lock(&lock);
    pthread_barrier_wait(&parked);
    while (!stop)
        pthread_cond_wait(&never, &lock);
    pthread_mutex_unlock(&lock);
    return n;
}
__attribute__((noinline)) static int waiter_level1(int n) { int r = waiter_level2(n + 1); sink += r; return r * 7; }

__attribute__((noinline)) static int spinner_level3(int n) {
    pthread_barrier_wait(&parked);
    while (!stop)
        sink += n;
    return n;
}
__attribute__((noinline)) static int spinner_level2(int n) { int r = spinner_level3(n + 1); sink += r; return r * 11; }
__attribute__((noinline)) static int spinner_level1(int n) { int r = spinner_level2(n + 1); sink += r; return r * 13; }

static void *reader(void *arg) { sink += reader_level1((int)(intptr_t)arg); return NULL; }
static void *sleeper(void *arg) { sink += sleeper_level1((int)(intptr_t)arg); return NULL; }
static void *waiter(void *arg) { sink += waiter_level1((int)(intptr_t)arg); return NULL; }
static void *spinner(void *arg) { sink += spinner_level1((int)(intptr_t)arg); return NULL; }

__attribute__((noinline)) static int crash_here(int n) {
    volatile int *volatile target = (volatile int *)CRASH_ADDRESS;
    *target = n;
    return n + 1;
}
__attribute__((noinline)) static int step_c(int n) { int r = crash_here(n + 1); sink += r; return r * 17; }
__attribute__((noinline)) static int step_b(int n) { int r = step_c(n + 1); sink += r; return r * 19; }
/* Called back from libmid. */
__attribute__((noinline)) static int step_a(int n) { int r = step_b(n + 1); sink += r; return r * 23; }
__attribute__((noinline)) static int recurse(int depth, int n) {
    int r = depth ? recurse(depth - 1, n + 1) : mid_call(step_a, n);
    sink += r;
    return r + depth;
}

int main(int argc, char **argv) {
    if (install_crash_handler(argc, argv) != 0)
        return 2;
    if (pipe(pipe_fds) != 0)
        return 1;
    void *(*bodies[])(void *) = {reader, sleeper, waiter, spinner};
    size_t count = sizeof bodies / sizeof bodies[0];
    pthread_barrier_init(&parked, NULL, (unsigned)count + 1);
    for (size_t i = 0; i < count; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, bodies[i], (void *)(intptr_t)i) != 0)
            return 1;
    }
    pthread_barrier_wait(&parked);
    /* Let the blocked threads reach their system calls. */
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    sink += recurse(3, argc);
    say("stackwalk_app: still alive after the crash\n");
    return 1;
}
