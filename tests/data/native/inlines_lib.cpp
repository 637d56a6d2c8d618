// A small library for comparing symbolication with llvm-symbolizer: templates, small inline
// functions nested in blocks, and unlikely paths that -O2 moves to .text.unlikely (.cold).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace shapes {

template <typename T>
struct Accumulator {
    T total{};
    int count = 0;

    inline void add(T value) {
        if (value < T{}) {
            total -= value;
        } else {
            total += value;
        }
        ++count;
    }

    inline T mean() const { return count ? total / static_cast<T>(count) : T{}; }
};

static inline int square(int x) { return x * x; }

static inline int clamp(int value, int low, int high) {
    if (value < low) return low;
    if (value > high) return high;
    return value;
}

template <typename T, typename F>
inline T fold(const std::vector<T>& values, T start, F step) {
    for (const T& value : values) {
        start = step(start, value);
    }
    return start;
}

[[noreturn]] __attribute__((noinline)) void fail(const char* what) {
    throw std::runtime_error(what);
}

}  // namespace shapes

extern "C" {

__attribute__((noinline)) int sum_of_squares(const int* values, int n) {
    shapes::Accumulator<int> acc;
    for (int i = 0; i < n; ++i) {
        {
            int v = shapes::clamp(values[i], -1000, 1000);
            acc.add(shapes::square(v));
        }
    }
    if (__builtin_expect(acc.count != n, 0)) {
        std::fprintf(stderr, "lost %d values\n", n - acc.count);
        std::abort();
    }
    return acc.total;
}

__attribute__((noinline)) double mean_of(const double* values, int n) {
    shapes::Accumulator<double> acc;
    for (int i = 0; i < n; ++i) {
        acc.add(values[i]);
    }
    if (__builtin_expect(n < 0, 0)) {
        shapes::fail("negative count");
    }
    return acc.mean();
}

}

namespace words {

struct Counter {
    std::map<std::string, int> counts;

    void count(const std::string& word) {
        auto found = counts.find(word);
        if (found == counts.end()) {
            counts.emplace(word, 1);
        } else {
            ++found->second;
        }
    }

    int most() const {
        int best = 0;
        for (const auto& item : counts) {
            if (item.second > best) best = item.second;
        }
        return best;
    }
};

__attribute__((noinline)) int count_words(const char* text) {
    Counter counter;
    std::string word;
    for (const char* p = text; *p; ++p) {
        if (*p == ' ') {
            if (!word.empty()) {
                counter.count(word);
                word.clear();
            }
        } else {
            word.push_back(*p);
        }
    }
    if (!word.empty()) counter.count(word);
    if (__builtin_expect(counter.counts.size() > 1000000, 0)) {
        shapes::fail("too many words");
    }
    return counter.most();
}

template <typename T>
struct Larger {
    T operator()(T a, T b) const { return a > b ? a : b; }
};

template <typename T>
__attribute__((noinline)) T largest(const std::vector<T>& values) {
    return shapes::fold(values, T{}, Larger<T>{});
}

template int largest<int>(const std::vector<int>&);
template long largest<long>(const std::vector<long>&);
template double largest<double>(const std::vector<double>&);

__attribute__((noinline)) std::vector<int> squares(int n) {
    std::vector<int> out;
    out.reserve(n);
    for (int i = 0; i < n; ++i) {
        out.push_back(shapes::square(i));
    }
    return out;
}

__attribute__((noinline)) std::string joined(const std::vector<std::string>& parts, char sep) {
    std::string out;
    for (size_t i = 0; i < parts.size(); ++i) {
        if (i) out += sep;
        out += parts[i];
    }
    if (__builtin_expect(out.size() > (1u << 30), 0)) {
        std::fprintf(stderr, "joined too long: %zu\n", out.size());
        std::exit(3);
    }
    return out;
}

}  // namespace words

extern "C" int library_entry(int n) {
    std::vector<int> values = words::squares(n);
    int total = sum_of_squares(values.data(), static_cast<int>(values.size()));
    total += words::largest(values);
    total += words::count_words("a b a c b a");
    std::vector<std::string> parts{"x", "y", std::to_string(total)};
    return total + static_cast<int>(words::joined(parts, ',').size());
}
