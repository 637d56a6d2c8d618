/* A program like a large application's process, for bench/process.py: linked with the generated
 * C++ library of bench/make_syms.py (libsymbolon_bench.so, whose .sym is about 100 MB), it loads
 * common system libraries (libcurl and what it needs, libxml2, sqlite...) for 30 modules and more,
 * parks a dozen threads with a few dozen kilobytes of stack each, and crashes in its own code
 * called back from the library: the crashing thread's stack passes through the library, so its
 * symbols are needed to walk and to name the frames.
 *
 * Usage: process_big HANDLER [HANDLER_ARGUMENT...]
 */
#include "crash_client.h"

#include <dlfcn.h>
#include <pthread.h>
#include <time.h>

#ifndef WORKERS
#define WORKERS 12
#endif
#ifndef WORKER_DEPTH
#define WORKER_DEPTH 12
#endif

/* symbolon_bench::m10::Handler7::HandleEvent(const int*, int, int): unit 10 is built at -O2, so
 * the library's frame is walked by its CFI; with flags & 2 it calls sink() below. */
extern int handle_event(const int *data, int count, int flags) __asm__(
    "_ZN14symbolon_bench3m108Handler711HandleEventEPKiii");

/* Loaded, when there, as a large application has them; each brings its own dependencies. */
static const char *const libraries[] = {
    "libcurl.so.4",   "libcurl-gnutls.so.4", "libxml2.so.2",  "libsqlite3.so.0",
    "libssl.so.3",    "libffi.so.8",         "libexpat.so.1", "libuuid.so.1",
    "libgmp.so.10",   "libreadline.so.8",    "libbz2.so.1.0", "libyaml-0.so.2",
};

volatile int counter;
volatile int stop;
static pthread_barrier_t parked;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;

/* Each level keeps two kilobytes of written stack, as real frames hold buffers and locals. */
__attribute__((noinline)) static int worker_level(int depth, int n) {
    volatile char buffer[2048];
    for (size_t i = 0; i < sizeof buffer; i += 64)
        buffer[i] = (char)(n + (int)i);
    int r;
    if (depth) {
        r = worker_level(depth - 1, n + 1);
    } else {
        pthread_barrier_wait(&parked);
        pthread_mutex_lock(&lock);
        while (!stop)
            pthread_cond_wait(&never, &lock);
        pthread_mutex_unlock(&lock);
        r = n;
    }
    counter += buffer[n % 64];
    return r + 1;
}

static void *worker(void *arg) {
    counter += worker_level(WORKER_DEPTH, (int)(intptr_t)arg);
    return NULL;
}

__attribute__((noinline)) static int crash_here(int n) {
    volatile int *volatile target = (volatile int *)0x5a0;
    *target = n;
    return n + 1;
}

/* Called from the library. */
void sink(int value) { counter += crash_here(value); }

__attribute__((noinline)) static int dispatch(int depth, int n) {
    int data[4] = {n, n + 1, n + 2, n + 3};
    int r = depth ? dispatch(depth - 1, n + 1) : handle_event(data, 4, 2);
    counter += r;
    return r + depth;
}

int main(int argc, char **argv) {
    if (install_crash_handler(argc, argv) != 0)
        return 2;
    for (size_t i = 0; i < sizeof libraries / sizeof libraries[0]; i++)
        dlopen(libraries[i], RTLD_NOW | RTLD_GLOBAL);
    pthread_barrier_init(&parked, NULL, WORKERS + 1);
    for (int i = 0; i < WORKERS; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker, (void *)(intptr_t)i) != 0)
            return 1;
    }
    pthread_barrier_wait(&parked);
    /* Let the parked threads reach their waits. */
    struct timespec pause = {0, 50 * 1000 * 1000};
    nanosleep(&pause, NULL);
    counter += dispatch(4, argc);
    say("process_big: still alive after the crash\n");
    return 1;
}
