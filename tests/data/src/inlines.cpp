// Built with -O2 -gdwarf-4 so that the compiler inlines and dump_syms -d writes INLINE records.
extern "C" void sink(int);

namespace demo {

static inline int clamp_value(int v, int lo, int hi) {
    if (v < lo) {
        sink(lo);
        return lo;
    }
    if (v > hi) {
        sink(hi);
        return hi;
    }
    return v;
}

static inline int scale(const int* p, int n) {
    int s = 0;
    for (int i = 0; i < n; i++) {
        s += clamp_value(p[i] * 3, 0, 1000);
    }
    return s;
}

struct Request {
    int process(const int* p, int n);
};

int Request::process(const int* p, int n) {
    int total = scale(p, n);
    sink(total);
    return total + scale(p + 1, n - 1);
}

}  // namespace demo

extern "C" int process_request(const int* p, int n) {
    demo::Request r;
    return r.process(p, n);
}
