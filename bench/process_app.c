/* A program that embeds CPython and crashes inside it, for bench/process.py: the interpreter runs
 * a few calls of Python that end in ctypes reading an unmapped address, so the crashing thread
 * goes through libc, libffi, _ctypes and libpython's evaluation loop. Crashpad's handler is
 * started at crash time, as tests/processing/crash_client.h does it.
 *
 * Usage: python_app HANDLER [HANDLER_ARGUMENT...]
 */
#include <Python.h>

#undef _GNU_SOURCE /* pyconfig.h's; crash_client.h defines it again */
#include "crash_client.h"

int main(int argc, char **argv) {
    if (install_crash_handler(argc, argv) != 0)
        return 2;
    Py_Initialize();
    PyRun_SimpleString("import ctypes\n"
                       "def deeper(n):\n"
                       "    return deeper(n - 1) if n else ctypes.string_at(0x5a0, 8)\n"
                       "deeper(20)\n");
    say("python_app: still alive after the crash\n");
    return 1;
}
