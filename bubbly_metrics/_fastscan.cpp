// Optional accelerator for bubbly_metrics.scan: decodes a block of DynamoDB-JSON export lines
// with simdjson straight into Arrow columns (the Arrow PyCapsule interface), with the GIL
// released.  It handles only blocks where every line is a plain, well-formed record or delete;
// for anything else it returns None and the caller decodes the block with msgspec, the
// reference path that owns every rule about broken and wrong-shape lines.  So this file never
// decides what an error is: it either produces exactly what the msgspec path would, or declines.
//
// For the aggregate path it can also count (decode(..., counts=)): a record whose outcome is
// plain (ignored, or dated by a plainly spelled timestamp) is counted per (day, app, user)
// instead of becoming a row; anything malformed or oddly spelled still becomes a row, and
// Polars (bubbly_metrics/records.py) classifies it.  So the rules of malformed records stay in
// one place, and tests/test_counting.py checks the counted ones agree with records.py.
//
// The DOM parser, not On-Demand: DOM validates each whole line before anything is read, so a
// line is taken only if it is valid JSON, exactly the lines msgspec accepts.  On-Demand
// validates only what is visited (a skipped ``payload`` is not checked past its brackets),
// so a broken line could be counted as a record instead of ``broken_json_line``.
//
// The simdjson sources come from the pysimdjson wheel (a build requirement), not this repo.
//
// Only Python's stable ABI is used (Py_LIMITED_API 3.11, "abi3"): one build serves every
// CPython >= 3.11, so the file the emulated bundle test runs under Python 3.11 is the file the
// Lambda runs under 3.12 (scripts/build_fastscan.py cross-builds it for arm64).

#define PY_SSIZE_T_CLEAN
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x030B0000
#endif
#include <Python.h>

#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "simdjson.h"

namespace {

// ---- Arrow C data interface (https://arrow.apache.org/docs/format/CDataInterface.html) ----

struct ArrowSchema {
    const char* format;
    const char* name;
    const char* metadata;
    int64_t flags;
    int64_t n_children;
    ArrowSchema** children;
    ArrowSchema* dictionary;
    void (*release)(ArrowSchema*);
    void* private_data;
};

struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void** buffers;
    ArrowArray** children;
    ArrowArray* dictionary;
    void (*release)(ArrowArray*);
    void* private_data;
};

constexpr int64_t ARROW_FLAG_NULLABLE = 2;

// ---- columns ----

// Arrow's string view: length, then the string itself when it fits in 12 bytes, else its first
// 4 bytes, the data buffer's index and the offset in it.  Polars stores strings this way, so
// it takes these columns without converting them.
struct View {
    int32_t length;
    uint8_t rest[12];
};
static_assert(sizeof(View) == 16, "Arrow string views are 16 bytes");

struct StringColumn {
    std::vector<View> views;
    std::string data;  // the bytes of strings longer than 12 (the one variadic buffer)
    std::vector<uint8_t> validity;  // bit per row, LSB first
    int64_t nulls = 0;
    int64_t data_sizes[1] = {0};  // Arrow's variadic buffer sizes, filled at export

    void set_valid(size_t row, bool valid) {
        if (validity.size() * 8 <= row) validity.resize(row / 8 + 1024, 0);
        if (valid) {
            validity[row >> 3] |= static_cast<uint8_t>(1u << (row & 7));
        } else {
            ++nulls;
        }
    }
    void push(size_t row, std::string_view value) {
        set_valid(row, true);
        View view{static_cast<int32_t>(value.size()), {}};
        if (value.size() <= 12) {
            std::memcpy(view.rest, value.data(), value.size());
        } else {
            const auto offset = static_cast<int32_t>(data.size());
            const int32_t buffer = 0;
            std::memcpy(view.rest, value.data(), 4);
            std::memcpy(view.rest + 4, &buffer, 4);
            std::memcpy(view.rest + 8, &offset, 4);
            data.append(value.data(), value.size());
        }
        views.push_back(view);
    }
    void push_null(size_t row) {
        set_valid(row, false);
        views.push_back(View{0, {}});
    }

    // Back to ``rows`` rows (a declined block's rows are taken out again).
    struct Mark {
        size_t rows, data;
        int64_t nulls;
    };
    Mark mark() const { return {views.size(), data.size(), nulls}; }
    void rollback(const Mark& m) {
        views.resize(m.rows);
        data.resize(m.data);
        nulls = m.nulls;
        for (size_t row = m.rows; row < validity.size() * 8; ++row) {
            if ((row & 7) == 0) {
                std::fill(validity.begin() + static_cast<std::ptrdiff_t>(row >> 3), validity.end(), 0);
                break;
            }
            validity[row >> 3] &= static_cast<uint8_t>(~(1u << (row & 7)));
        }
    }
};

constexpr int N_STRING_COLUMNS = 7;
constexpr size_t MAX_DEPTH = 128;  // JSON nesting the compiled decoder takes (see decode)
const char* const COLUMN_NAMES[1 + N_STRING_COLUMNS] = {
    "line", "model_id", "owner", "created_at", "created_at_type", "updated_at", "updated_at_type", "expires_at",
};
enum { MODEL_ID, OWNER, CREATED_AT, CREATED_AT_TYPE, UPDATED_AT, UPDATED_AT_TYPE, EXPIRES_AT };

constexpr int N_TALLIES = 3;  // games, parties created, parties joined (a summary's counts)
const char* const TALLY_NAMES[N_TALLIES] = {"games", "parties_created", "parties_joined"};

struct Columns {
    std::vector<uint32_t> lines;
    StringColumn strings[N_STRING_COLUMNS];
    unsigned wanted = (1u << N_STRING_COLUMNS) - 1;  // bit i: strings[i] is built and exported
    // A summary (Counts.summary): ``lines`` holds each group's day (int32 epoch days), model_id
    // its app, owner its user, and ``tallies`` its counts (exported after the strings).
    bool summary = false;
    std::vector<uint32_t> tallies[N_TALLIES];

    bool want(int column) const { return (wanted >> column) & 1u; }

    // Room for ``bytes`` more of lines (export lines are a few hundred bytes; growing past
    // this is only slower).
    // Grown geometrically: a batch is appended to block after block, and growing each time to
    // just what the block needs would copy the whole batch again every time.
    void reserve(size_t bytes) {
        const size_t rows = lines.size() + bytes / 256 + 16;
        if (rows <= lines.capacity()) return;
        const size_t room = std::max(rows, 2 * lines.capacity());
        lines.reserve(room);
        for (int i = 0; i < N_STRING_COLUMNS; ++i) {
            if (!want(i)) continue;
            StringColumn& column = strings[i];
            column.views.reserve(room);
            column.validity.reserve(room / 8 + 1);
        }
    }

    struct Mark {
        size_t lines;
        StringColumn::Mark strings[N_STRING_COLUMNS];
    };
    Mark mark() const {
        Mark m{lines.size(), {}};
        for (int i = 0; i < N_STRING_COLUMNS; ++i) m.strings[i] = strings[i].mark();
        return m;
    }
    void rollback(const Mark& m) {
        lines.resize(m.lines);
        for (int i = 0; i < N_STRING_COLUMNS; ++i) strings[i].rollback(m.strings[i]);
    }
};

// ---- decoding ----

// The attributes the metrics read (the msgspec path's _Image fields).
enum { A_MODEL_ID, A_OWNER, A_CREATED_AT, A_UPDATED_AT, A_EXPIRES_AT, N_ATTRS };

int attribute_index(std::string_view key) {
    if (key == "modelId") return A_MODEL_ID;
    if (key == "owner") return A_OWNER;
    if (key == "createdAt") return A_CREATED_AT;
    if (key == "updatedAt") return A_UPDATED_AT;
    if (key == "expiresAt") return A_EXPIRES_AT;
    return -1;
}

struct Value {
    bool present = false;
    bool has_s = false;
    bool has_n = false;
    std::string_view s;
    std::string_view n;
};

using simdjson::dom::element;
using simdjson::dom::object;

// An attribute value ({"S": "..."} / {"N": "..."} / another type).  False: not plain, decline.
bool read_value(element el, Value& value) {
    object obj;
    if (el.get_object().get(obj)) return false;
    value.present = true;
    bool seen_s = false, seen_n = false;
    for (auto field : obj) {
        if (field.key == "S" || field.key == "N") {
            bool& seen = field.key == "S" ? seen_s : seen_n;
            if (seen) return false;  // duplicate key: leave which one wins to the reference path
            seen = true;
            if (field.value.is_null()) continue;
            std::string_view text;
            if (field.value.get_string().get(text)) return false;
            (field.key == "S" ? value.s : value.n) = text;
            (field.key == "S" ? value.has_s : value.has_n) = true;
        } else if (field.key == "present") {
            return false;  // a field name of the reference path's struct
        }
    }
    return true;
}

bool read_image(element el, Value (&values)[N_ATTRS]) {
    object obj;
    if (el.get_object().get(obj)) return false;
    unsigned seen = 0;
    for (auto field : obj) {
        int index = attribute_index(field.key);
        if (index < 0) continue;
        if (seen & (1u << index)) return false;
        seen |= 1u << index;
        if (!read_value(field.value, values[index])) return false;
    }
    return true;
}

void push_string(Columns& columns, int column, size_t row, bool valid, std::string_view value) {
    if (!columns.want(column)) return;
    if (valid) {
        columns.strings[column].push(row, value);
    } else {
        columns.strings[column].push_null(row);
    }
}

// A timestamp's value and its DynamoDB type: "N", "S", "?" (another type) or null (absent).
void push_timestamp(Columns& columns, int column, int type, size_t row, const Value& value) {
    if (value.has_n) {
        push_string(columns, column, row, true, value.n);
        push_string(columns, type, row, true, "N");
    } else if (value.has_s) {
        push_string(columns, column, row, true, value.s);
        push_string(columns, type, row, true, "S");
    } else {
        push_string(columns, column, row, false, {});
        push_string(columns, type, row, value.present, "?");
    }
}

// ---- counting: records -> per-(day, app, user) counts (the rules of bubbly_metrics/records.py) ----
//
// For the aggregate path only.  A record whose outcome is plain (ignored, counted, or outside
// the range, with an unambiguous timestamp) is counted here; every other record (anything
// malformed, or a timestamp spelled in a way this code does not decide) is appended to the
// columns as usual, and Polars classifies it (records.py), so the rules of malformed records
// and odd timestamps live in one place.  tests/test_counting.py checks the two agree.

constexpr int64_t MIN_EPOCH_SECONDS = -62135596800;  // records.MIN_EPOCH_SECONDS
constexpr int64_t MAX_EPOCH_SECONDS = 253402300799;  // records.MAX_EPOCH_SECONDS

struct Tally {
    uint32_t counts[N_TALLIES] = {0, 0, 0};
};

// Groups: an open-addressing table of indices into ``entries`` (which never move, so the undo
// log can name them), keys in one arena.  Most records of a file start a group of their own
// (users x days x apps), so a node per group (std::unordered_map) costs more than the parse.
struct Groups {
    struct Entry {
        uint64_t hash;
        size_t key;  // offset in ``keys``
        uint32_t key_len;
        Tally tally;
    };
    std::vector<Entry> entries;
    std::string keys;
    std::vector<uint32_t> slots;  // entry index + 1; 0: empty

    static uint64_t hash_of(std::string_view key) {
        uint64_t h = 0x9E3779B97F4A7C15ull ^ key.size();
        size_t i = 0;
        for (; i + 8 <= key.size(); i += 8) {
            uint64_t word;
            std::memcpy(&word, key.data() + i, 8);
            h = (h ^ word) * 0xFF51AFD7ED558CCDull;
            h ^= h >> 32;
        }
        uint64_t tail = 0;
        std::memcpy(&tail, key.data() + i, key.size() - i);
        h = (h ^ tail) * 0xC4CEB9FE1A85EC53ull;
        return h ^ (h >> 29);
    }
    std::string_view key_of(const Entry& e) const { return std::string_view(keys).substr(e.key, e.key_len); }

    void grow() {
        std::vector<uint32_t> bigger(slots.empty() ? 1024 : slots.size() * 2, 0);
        const size_t mask = bigger.size() - 1;
        for (size_t i = 0; i < entries.size(); ++i) {
            size_t at = entries[i].hash & mask;
            while (bigger[at] != 0) at = (at + 1) & mask;
            bigger[at] = static_cast<uint32_t>(i + 1);
        }
        slots.swap(bigger);
    }
    // The group of ``key`` (created with zero counts if new).
    Entry& find(std::string_view key, uint64_t hash) {
        if ((entries.size() + 1) * 2 > slots.size()) grow();
        const size_t mask = slots.size() - 1;
        size_t at = hash & mask;
        while (slots[at] != 0) {
            Entry& e = entries[slots[at] - 1];
            if (e.hash == hash && key_of(e) == key) return e;
            at = (at + 1) & mask;
        }
        entries.push_back(Entry{hash, keys.size(), static_cast<uint32_t>(key.size()), {}});
        keys.append(key.data(), key.size());
        slots[at] = static_cast<uint32_t>(entries.size());
        return entries.back();
    }
    void clear() {
        entries.clear();
        keys.clear();
        slots.clear();
    }
    void swap(Groups& other) {
        entries.swap(other.entries);
        keys.swap(other.keys);
        slots.swap(other.slots);
    }
};

struct Counts {
    int64_t first_day = 0, last_day = -1;  // the range, in epoch days
    // Key: day (4 bytes), app length (4 bytes), app, user.
    Groups groups;
    int64_t counted = 0, outside = 0, ignored = 0;
    // A record's group is looked up one record late: its key and hash are made, its slot is
    // prefetched, and the previous record's group is counted meanwhile, so the slot's cache
    // miss overlaps the parse of the next line.  ``flush`` counts the last one.
    std::string key, pending_key;  // scratch: this record's key, and the one waiting
    uint64_t pending_hash = 0;
    int pending_kind = -1;  // -1: none waiting
    // What the block being decoded added (undone when the block is declined): entry and count.
    std::vector<std::pair<uint32_t, uint8_t>> undo;
    int64_t saved[3] = {0, 0, 0};

    void begin() {
        undo.clear();
        pending_kind = -1;
        saved[0] = counted, saved[1] = outside, saved[2] = ignored;
    }
    void rollback() {
        pending_kind = -1;  // never counted
        for (const auto& [entry, kind] : undo) --groups.entries[entry].tally.counts[kind];
        undo.clear();
        counted = saved[0], outside = saved[1], ignored = saved[2];
    }
    void flush() {
        if (pending_kind < 0) return;
        Groups::Entry& entry = groups.find(pending_key, pending_hash);
        ++entry.tally.counts[pending_kind];
        undo.emplace_back(static_cast<uint32_t>(&entry - groups.entries.data()), static_cast<uint8_t>(pending_kind));
        pending_kind = -1;
    }
    void add(int32_t day, std::string_view app, std::string_view user, int kind) {
        key.assign(reinterpret_cast<const char*>(&day), 4);
        const auto app_len = static_cast<uint32_t>(app.size());
        key.append(reinterpret_cast<const char*>(&app_len), 4);
        key.append(app.data(), app.size());
        key.append(user.data(), user.size());
        const uint64_t hash = Groups::hash_of(key);
        if (!groups.slots.empty()) __builtin_prefetch(&groups.slots[hash & (groups.slots.size() - 1)]);
        flush();
        key.swap(pending_key);
        pending_hash = hash;
        pending_kind = kind;
        ++counted;
    }
    void clear() {
        groups.clear();
        counted = outside = ignored = 0;
        pending_kind = -1;
        undo.clear();
    }
    // Add ``other``'s counts (and clear it): a swap when these are empty (a file's one member).
    void merge(Counts& other) {
        if (groups.entries.empty()) {
            groups.swap(other.groups);
        } else {
            for (const auto& e : other.groups.entries) {
                const std::string_view k = other.groups.key_of(e);
                Tally& tally = groups.find(k, e.hash).tally;
                for (int t = 0; t < N_TALLIES; ++t) tally.counts[t] += e.tally.counts[t];
            }
        }
        counted += other.counted, outside += other.outside, ignored += other.ignored;
        other.clear();
    }
};

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && std::memcmp(s.data(), prefix.data(), prefix.size()) == 0;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

enum Kind { K_NONE = -1, K_SESSION, K_PARTY, K_MEMBER };

// records._kind: "session-…" or "session" (and so on); anything else is no event.
int kind_of(const Value& model_id) {
    static const std::string_view names[3] = {"session", "party", "member"};
    if (!model_id.has_s) return K_NONE;
    for (int k = 0; k < 3; ++k) {
        const std::string_view m = model_id.s;
        if (starts_with(m, names[k]) && (m.size() == names[k].size() || m[names[k].size()] == '-')) return k;
    }
    return K_NONE;
}

// The second '-' segment of ``keyed`` when a third follows it and it is non-empty.
bool app_of(std::string_view keyed, std::string_view& app) {
    const size_t first = keyed.find('-');
    if (first == std::string_view::npos) return false;
    const size_t second = keyed.find('-', first + 1);
    if (second == std::string_view::npos || second == first + 1) return false;
    app = keyed.substr(first + 1, second - first - 1);
    return true;
}

// ASCII digits text[at, at+n) as a number; false if any is not a digit.
bool digits(std::string_view text, size_t at, size_t n, int64_t& out) {
    out = 0;
    for (size_t i = at; i < at + n; ++i) {
        if (!is_digit(text[i])) return false;
        out = out * 10 + (text[i] - '0');
    }
    return true;
}

// A canonical integer ("0", or an optional '-' and up to 18 digits without a leading zero),
// optionally followed by '.' and digits (the integer part then at most 15 digits): floored.
// Other spellings (exponents, '+', leading zeros, "-0") are left to Polars.
bool parse_n(std::string_view text, int64_t& ts) {
    const bool negative = !text.empty() && text[0] == '-';
    const size_t start = negative ? 1 : 0;
    const size_t dot = text.find('.');
    const size_t whole_end = dot == std::string_view::npos ? text.size() : dot;
    const size_t n = whole_end - start;
    if (n == 0 || n > (dot == std::string_view::npos ? 18u : 15u)) return false;
    if (text[start] == '0' && (n > 1 || negative)) return false;
    int64_t whole;
    if (!digits(text, start, n, whole)) return false;
    bool fraction = false;
    if (dot != std::string_view::npos) {
        if (dot + 1 == text.size()) return false;
        for (size_t i = dot + 1; i < text.size(); ++i) {
            if (!is_digit(text[i])) return false;
            fraction = fraction || text[i] != '0';
        }
    }
    ts = negative ? -whole - (fraction ? 1 : 0) : whole;
    return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int days_in_month(int64_t y, int64_t m) {
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

// "YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)", years 1971-9998 (no negative epochs, whose
// fractions Polars floors), valid fields, no leap second: whole epoch seconds.
bool parse_iso(std::string_view t, int64_t& ts) {
    if (t.size() < 20 || t[4] != '-' || t[7] != '-' || t[10] != 'T' || t[13] != ':' || t[16] != ':') return false;
    int64_t y, mo, d, h, mi, s;
    if (!digits(t, 0, 4, y) || !digits(t, 5, 2, mo) || !digits(t, 8, 2, d) || !digits(t, 11, 2, h) ||
        !digits(t, 14, 2, mi) || !digits(t, 17, 2, s))
        return false;
    if (y < 1971 || y > 9998 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59)
        return false;
    size_t at = 19;
    if (t[at] == '.') {
        size_t n = 0;
        while (at + 1 + n < t.size() && is_digit(t[at + 1 + n])) ++n;
        if (n < 1 || n > 9) return false;
        at += 1 + n;
    }
    int64_t offset = 0;
    if (at + 1 == t.size() && t[at] == 'Z') {
        offset = 0;
    } else if (at + 6 == t.size() && (t[at] == '+' || t[at] == '-') && t[at + 3] == ':') {
        int64_t oh, om;
        if (!digits(t, at + 1, 2, oh) || !digits(t, at + 4, 2, om) || oh > 23 || om > 59) return false;
        offset = (t[at] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
    } else {
        return false;
    }
    ts = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset;
    return true;
}

// The dating attribute's whole epoch seconds; false: missing, another type, or a spelling
// left to Polars.
bool timestamp_of(const Value& value, int64_t& ts) {
    if (value.has_n) return parse_n(value.n, ts);
    if (value.has_s) return parse_iso(value.s, ts);
    return false;
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

// Count a record whose outcome is plain; false leaves it to Polars (appended as a row).
bool count_record(const Value (&v)[N_ATTRS], Counts& counts) {
    const int kind = kind_of(v[A_MODEL_ID]);
    if (kind == K_NONE) {
        ++counts.ignored;
        return true;
    }
    const bool member = kind == K_MEMBER;
    const Value& keyed = member ? v[A_OWNER] : v[A_MODEL_ID];
    std::string_view app, user;
    if (!keyed.has_s || !app_of(keyed.s, app)) return false;
    if (member && !starts_with(keyed.s, "party-")) return false;
    const std::string_view prefix = member ? "member-user-" : "user-";
    const Value& holder = member ? v[A_MODEL_ID] : v[A_OWNER];
    if (!holder.has_s || !starts_with(holder.s, prefix) || holder.s.size() <= prefix.size()) return false;
    user = holder.s.substr(prefix.size());
    int64_t ts;
    if (!timestamp_of(v[kind == K_SESSION ? A_UPDATED_AT : A_CREATED_AT], ts)) return false;
    const int64_t day = floor_div(ts, 86400);
    if (ts < MIN_EPOCH_SECONDS || ts > MAX_EPOCH_SECONDS || day < counts.first_day || day > counts.last_day) {
        ++counts.outside;
    } else {
        counts.add(static_cast<int32_t>(day), app, user, kind);
    }
    return true;
}

enum class Outcome { RECORD, DELETE, DECLINE };

// One line's document: a record (appended to columns), a delete, or anything else (decline).
// With ``counts``, a record with a plain outcome is counted there instead (count_record).
Outcome decode_record(element doc, bool incremental, Columns& columns, Counts* counts, uint32_t line_no) {
    object top;
    if (doc.get_object().get(top)) return Outcome::DECLINE;
    Value images[2][N_ATTRS];  // [0] Item, [1] NewImage
    bool has_image[2] = {false, false};
    bool seen[3] = {false, false, false};  // Item, NewImage, Keys
    for (auto field : top) {
        int which = field.key == "Item" ? 0 : field.key == "NewImage" ? 1 : field.key == "Keys" ? 2 : -1;
        if (which < 0) continue;
        if (seen[which]) return Outcome::DECLINE;
        seen[which] = true;
        if (which == 2 || field.value.is_null()) continue;
        if (!read_image(field.value, images[which])) return Outcome::DECLINE;
        has_image[which] = true;
    }
    const int wanted = incremental ? 1 : 0;
    if (!has_image[wanted]) {
        return incremental && seen[2] ? Outcome::DELETE : Outcome::DECLINE;
    }
    const Value(&v)[N_ATTRS] = images[wanted];
    if (counts != nullptr && count_record(v, *counts)) return Outcome::RECORD;
    const size_t row = columns.lines.size();
    columns.lines.push_back(line_no);
    push_string(columns, MODEL_ID, row, v[A_MODEL_ID].has_s, v[A_MODEL_ID].s);
    push_string(columns, OWNER, row, v[A_OWNER].has_s, v[A_OWNER].s);
    push_timestamp(columns, CREATED_AT, CREATED_AT_TYPE, row, v[A_CREATED_AT]);
    push_timestamp(columns, UPDATED_AT, UPDATED_AT_TYPE, row, v[A_UPDATED_AT]);
    push_string(columns, EXPIRES_AT, row, v[A_EXPIRES_AT].has_n, v[A_EXPIRES_AT].n);
    return Outcome::RECORD;
}

// One line (without its '\n') at ``data``, with SIMDJSON_PADDING readable bytes after it: a
// record or a delete appended or counted, or false (decline).  A line must be one JSON object
// starting at its first byte (no blank lines, no leading blanks: those are for the reference
// path).
bool decode_line(simdjson::dom::parser& parser, const uint8_t* data, size_t len, bool incremental,
                 Columns& columns, Counts* counts, uint32_t line_no, size_t& deletes) {
    if (len == 0 || data[0] != '{') return false;
    element doc;
    if (parser.parse(data, len, false).get(doc)) return false;
    const Outcome outcome = decode_record(doc, incremental, columns, counts, line_no);
    if (outcome == Outcome::DECLINE) return false;
    deletes += outcome == Outcome::DELETE;
    return true;
}

// Every line of the first ``cut`` bytes of the concatenated ``pieces`` (complete lines; the
// last may lack its '\n').  True when each is a record or a delete (see decode_line).
//
// A line is parsed where it lies in its piece when the piece holds SIMDJSON_PADDING bytes after
// it (the next lines, or bytes past ``cut``: simdjson reads them, never interprets them), so
// the block is not copied; a line that crosses into the next piece or ends near its piece's
// end is copied into ``line``, padded.  (Parsing the block as one document stream measured no
// faster.)
bool decode_lines(simdjson::dom::parser& parser, const std::vector<std::string_view>& pieces, size_t cut,
                  std::vector<uint8_t>& line, uint32_t first_line, bool incremental, Columns& columns,
                  Counts* counts, size_t& lines, size_t& deletes) {
    constexpr size_t PAD = simdjson::SIMDJSON_PADDING;
    size_t at = 0;         // offset of the piece in the block
    size_t carried = 0;    // bytes of a line begun in earlier pieces, held in ``line``
    bool carrying = false;
    auto parse_copy = [&](const uint8_t* bytes, size_t n) {  // the rest of a line begun in ``line``
        if (line.size() < carried + n + PAD) line.resize(carried + n + PAD);
        std::memcpy(line.data() + carried, bytes, n);
        std::memset(line.data() + carried + n, ' ', PAD);
        const size_t len = carried + n;
        carried = 0;
        carrying = false;
        return decode_line(parser, line.data(), len, incremental, columns, counts,
                           first_line + static_cast<uint32_t>(lines++), deletes);
    };
    for (const std::string_view piece : pieces) {
        if (at >= cut) break;
        const auto* base = reinterpret_cast<const uint8_t*>(piece.data());
        const size_t size = piece.size();
        const size_t n = std::min(size, cut - at);  // bytes of this piece in the block
        const bool last = at + size >= cut;
        size_t pos = 0;
        while (pos < n) {
            const void* nl = std::memchr(base + pos, '\n', n - pos);
            if (nl == nullptr && !last) {  // the line goes on in the next piece
                if (line.size() < carried + (n - pos)) line.resize(carried + (n - pos) + PAD);
                std::memcpy(line.data() + carried, base + pos, n - pos);
                carried += n - pos;
                carrying = true;
                break;
            }
            const size_t end = nl != nullptr ? static_cast<size_t>(static_cast<const uint8_t*>(nl) - base) : n;
            bool ok;
            if (carrying) {
                ok = parse_copy(base + pos, end - pos);
            } else if (end + PAD <= size) {
                ok = decode_line(parser, base + pos, end - pos, incremental, columns, counts,
                                 first_line + static_cast<uint32_t>(lines++), deletes);
            } else {
                ok = parse_copy(base + pos, end - pos);
            }
            if (!ok) return false;
            pos = end + 1;
        }
        at += size;
    }
    // A block always ends with a complete line (or at ``cut``, the end of the last piece).
    return !carrying;
}

// ---- the Block type: decoded columns, exported once through __arrow_c_array__ ----

constexpr int MAX_CHILDREN = 1 + N_STRING_COLUMNS + N_TALLIES;

struct Exported {
    Columns columns;
    ArrowSchema child_schemas[MAX_CHILDREN];
    ArrowSchema* child_schema_ptrs[MAX_CHILDREN];
    ArrowArray child_arrays[MAX_CHILDREN];
    ArrowArray* child_array_ptrs[MAX_CHILDREN];
    const void* buffers[MAX_CHILDREN][4];
    const void* struct_buffers[1];
    // One reference each for the schema, the array and every child array: a consumer may move
    // a child out and release the parent first (the C data interface allows it), and may
    // release them on threads of its own.
    std::atomic<int> refs{0};
};

// Exported blocks whose columns some consumer still holds (``live_exports()``): a small frame
// that keeps a zero-copy column of a block keeps the whole block's memory.
std::atomic<long> live_exported{0};

void unref(Exported* exported) {
    if (exported->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        delete exported;
        live_exported.fetch_sub(1, std::memory_order_relaxed);
    }
}

// Child schemas own nothing (their format and name are static strings).
void release_child_schema(ArrowSchema* schema) { schema->release = nullptr; }

void release_child_array(ArrowArray* array) {
    auto* exported = static_cast<Exported*>(array->private_data);
    array->release = nullptr;
    unref(exported);
}

// The parent schema or array: releases the children still live (a consumer may have moved
// some out), then drops its own reference.
template <typename T>
void release_parent(T* parent) {
    auto* exported = static_cast<Exported*>(parent->private_data);
    for (int64_t i = 0; i < parent->n_children; ++i) {
        if (parent->children[i]->release != nullptr) parent->children[i]->release(parent->children[i]);
    }
    parent->release = nullptr;
    unref(exported);
}

// A capsule that still owns its struct releases it (a consumer that imported it has marked it
// released), then frees the struct itself.
template <typename T>
void capsule_destructor(PyObject* capsule, const char* name) {
    auto* owned = static_cast<T*>(PyCapsule_GetPointer(capsule, name));
    if (owned == nullptr) {
        PyErr_Clear();
        return;
    }
    if (owned->release != nullptr) owned->release(owned);
    std::free(owned);
}

void schema_capsule_destructor(PyObject* capsule) { capsule_destructor<ArrowSchema>(capsule, "arrow_schema"); }
void array_capsule_destructor(PyObject* capsule) { capsule_destructor<ArrowArray>(capsule, "arrow_array"); }

struct BlockObject {
    PyObject_HEAD
    Columns* columns;
};

PyTypeObject* BlockType = nullptr;  // a heap type (PyType_FromSpec): static types are not in the stable ABI

void block_dealloc(BlockObject* self) {
    delete self->columns;
    PyTypeObject* type = Py_TYPE(reinterpret_cast<PyObject*>(self));
    auto free_slot = reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free));
    free_slot(self);
    Py_DECREF(type);  // instances of heap types hold a reference to their type
}

Py_ssize_t block_length(BlockObject* self) {
    return self->columns == nullptr ? 0 : static_cast<Py_ssize_t>(self->columns->lines.size());
}

PyObject* block_arrow_c_array(BlockObject* self, PyObject* args, PyObject* kwargs) {
    static const char* keywords[] = {"requested_schema", nullptr};
    PyObject* requested = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O", const_cast<char**>(keywords), &requested)) return nullptr;
    if (self->columns == nullptr) {
        PyErr_SetString(PyExc_ValueError, "this block was already exported");
        return nullptr;
    }
    Exported* exported;
    try {
        exported = new Exported{};
    } catch (const std::bad_alloc&) {
        return PyErr_NoMemory();
    }
    live_exported.fetch_add(1, std::memory_order_relaxed);
    exported->columns = std::move(*self->columns);
    delete self->columns;
    self->columns = nullptr;
    Columns& c = exported->columns;
    const int64_t rows = static_cast<int64_t>(c.lines.size());

    int children = 0;
    for (int i = 0; i <= N_STRING_COLUMNS; ++i) {
        if (i > 0 && !c.want(i - 1)) continue;
        const int k = children++;
        ArrowSchema& cs = exported->child_schemas[k];
        cs = ArrowSchema{i > 0 ? "vu" : c.summary ? "i" : "I", COLUMN_NAMES[i], nullptr, ARROW_FLAG_NULLABLE, 0, nullptr, nullptr,
                         release_child_schema, nullptr};
        exported->child_schema_ptrs[k] = &cs;
        ArrowArray& ca = exported->child_arrays[k];
        const void** buffers = exported->buffers[k];
        if (i == 0) {
            buffers[0] = nullptr;
            buffers[1] = c.lines.data();
            ca = ArrowArray{rows, 0, 0, 2, 0, buffers, nullptr, nullptr, release_child_array, exported};
        } else {
            StringColumn& sc = c.strings[i - 1];
            const int64_t bytes = (rows + 7) / 8;
            if (static_cast<int64_t>(sc.validity.size()) < bytes) {
                try {
                    sc.validity.resize(bytes, 0);
                } catch (const std::bad_alloc&) {
                    delete exported;
                    live_exported.fetch_sub(1, std::memory_order_relaxed);
                    return PyErr_NoMemory();
                }
            }
            sc.data_sizes[0] = static_cast<int64_t>(sc.data.size());
            buffers[0] = sc.nulls ? sc.validity.data() : nullptr;
            buffers[1] = sc.views.data();
            buffers[2] = sc.data.data();
            buffers[3] = sc.data_sizes;
            ca = ArrowArray{rows, sc.nulls, 0, 4, 0, buffers, nullptr, nullptr, release_child_array, exported};
        }
        exported->child_array_ptrs[k] = &ca;
    }
    for (int t = 0; c.summary && t < N_TALLIES; ++t) {
        const int k = children++;
        ArrowSchema& cs = exported->child_schemas[k];
        cs = ArrowSchema{"I", TALLY_NAMES[t], nullptr, ARROW_FLAG_NULLABLE, 0, nullptr, nullptr, release_child_schema,
                         nullptr};
        exported->child_schema_ptrs[k] = &cs;
        const void** buffers = exported->buffers[k];
        buffers[0] = nullptr;
        buffers[1] = c.tallies[t].data();
        exported->child_arrays[k] = ArrowArray{rows, 0, 0, 2, 0, buffers, nullptr, nullptr, release_child_array, exported};
        exported->child_array_ptrs[k] = &exported->child_arrays[k];
    }
    exported->struct_buffers[0] = nullptr;

    auto* schema = static_cast<ArrowSchema*>(std::malloc(sizeof(ArrowSchema)));
    auto* array = static_cast<ArrowArray*>(std::malloc(sizeof(ArrowArray)));
    if (schema == nullptr || array == nullptr) {
        std::free(schema);
        std::free(array);
        delete exported;
        live_exported.fetch_sub(1, std::memory_order_relaxed);
        return PyErr_NoMemory();
    }
    *schema = ArrowSchema{"+s", "", nullptr, 0, children, exported->child_schema_ptrs, nullptr,
                          release_parent<ArrowSchema>, exported};
    *array = ArrowArray{rows, 0, 0, 1, children, exported->struct_buffers, exported->child_array_ptrs,
                        nullptr, release_parent<ArrowArray>, exported};
    exported->refs.store(2 + children);

    PyObject* schema_capsule = PyCapsule_New(schema, "arrow_schema", schema_capsule_destructor);
    if (schema_capsule == nullptr) {
        release_parent(schema);
        std::free(schema);
        release_parent(array);
        std::free(array);
        return nullptr;
    }
    PyObject* array_capsule = PyCapsule_New(array, "arrow_array", array_capsule_destructor);
    if (array_capsule == nullptr) {
        Py_DECREF(schema_capsule);
        release_parent(array);
        std::free(array);
        return nullptr;
    }
    return Py_BuildValue("(NN)", schema_capsule, array_capsule);
}

// block.nbytes() -> the bytes its columns hold (what a batch of them costs in memory).
PyObject* block_nbytes(BlockObject* self, PyObject*) {
    size_t bytes = 0;
    if (const Columns* c = self->columns) {
        bytes = c->lines.size() * sizeof(uint32_t);
        for (int i = 0; i < N_STRING_COLUMNS; ++i) {
            const StringColumn& column = c->strings[i];
            bytes += column.views.size() * sizeof(View) + column.data.size() + column.validity.size();
        }
    }
    return PyLong_FromSize_t(bytes);
}

PyMethodDef block_methods[] = {
    {"nbytes", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(block_nbytes)), METH_NOARGS,
     "The bytes the decoded columns hold (0 once exported)."},
    {"__arrow_c_array__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(block_arrow_c_array)),
     METH_VARARGS | METH_KEYWORDS, "Export the decoded columns (once) as an Arrow struct array."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot block_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(block_dealloc)},
    {Py_tp_methods, block_methods},
    {Py_sq_length, reinterpret_cast<void*>(block_length)},
    {Py_tp_doc, const_cast<char*>("Decoded record columns; exported once through __arrow_c_array__.")},
    {0, nullptr},
};

PyType_Spec block_spec = {"bubbly_metrics._fastscan.Block", sizeof(BlockObject), 0, Py_TPFLAGS_DEFAULT, block_slots};

// ---- the Counts type: a data file's counts (decode(..., counts=)), summarised once ----

struct CountsObject {
    PyObject_HEAD
    Counts* counts;
};

PyTypeObject* CountsType = nullptr;

void counts_dealloc(CountsObject* self) {
    delete self->counts;
    PyTypeObject* type = Py_TYPE(reinterpret_cast<PyObject*>(self));
    auto free_slot = reinterpret_cast<freefunc>(PyType_GetSlot(type, Py_tp_free));
    free_slot(self);
    Py_DECREF(type);
}

Counts* counts_of(PyObject* object) {
    if (!PyObject_TypeCheck(object, CountsType)) {
        PyErr_SetString(PyExc_TypeError, "expected a Counts");
        return nullptr;
    }
    return reinterpret_cast<CountsObject*>(object)->counts;
}

// counts.merge(other): add other's counts (and clear other).
PyObject* counts_merge(CountsObject* self, PyObject* other_object) {
    Counts* other = counts_of(other_object);
    if (other == nullptr) return nullptr;
    if (other == self->counts) {
        PyErr_SetString(PyExc_ValueError, "cannot merge Counts into themselves");
        return nullptr;
    }
    try {
        self->counts->merge(*other);
    } catch (const std::bad_alloc&) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

// counts.clear(): drop every count (a damaged gzip member's).
PyObject* counts_clear(CountsObject* self, PyObject*) {
    self->counts->clear();
    Py_RETURN_NONE;
}

// counts.totals() -> (counted, outside_range, ignored) records.
PyObject* counts_totals(CountsObject* self, PyObject*) {
    const Counts& c = *self->counts;
    return Py_BuildValue("(LLL)", static_cast<long long>(c.counted), static_cast<long long>(c.outside),
                         static_cast<long long>(c.ignored));
}

// The groups with a count as summary columns (a rolled-back group can be left at zero).
void fill_summary(const Counts& counts, Columns& columns) {
    columns.summary = true;
    columns.wanted = (1u << MODEL_ID) | (1u << OWNER);
    for (const auto& entry : counts.groups.entries) {
        const Tally& tally = entry.tally;
        if (tally.counts[0] == 0 && tally.counts[1] == 0 && tally.counts[2] == 0) continue;
        const std::string_view key = counts.groups.key_of(entry);
        int32_t day;
        uint32_t app_len;
        std::memcpy(&day, key.data(), 4);
        std::memcpy(&app_len, key.data() + 4, 4);
        const size_t row = columns.lines.size();
        columns.lines.push_back(static_cast<uint32_t>(day));
        columns.strings[MODEL_ID].push(row, key.substr(8, app_len));
        columns.strings[OWNER].push(row, key.substr(8 + app_len));
        for (int t = 0; t < N_TALLIES; ++t) columns.tallies[t].push_back(tally.counts[t]);
    }
}

// counts.summary() -> Block: per group, line (its day, int32), model_id (its app), owner (its
// user), games, parties_created, parties_joined.
PyObject* counts_summary(CountsObject* self, PyObject*) {
    Columns* columns = new (std::nothrow) Columns();
    if (columns == nullptr) return PyErr_NoMemory();
    try {
        fill_summary(*self->counts, *columns);
    } catch (const std::bad_alloc&) {
        delete columns;
        return PyErr_NoMemory();
    }
    auto* block = PyObject_New(BlockObject, BlockType);
    if (block == nullptr) {
        delete columns;
        return nullptr;
    }
    block->columns = columns;
    return reinterpret_cast<PyObject*>(block);
}

PyMethodDef counts_methods[] = {
    {"merge", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(counts_merge)), METH_O,
     "Add another Counts' counts to these (and clear it)."},
    {"clear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(counts_clear)), METH_NOARGS,
     "Drop every count."},
    {"totals", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(counts_totals)), METH_NOARGS,
     "(counted, outside_range, ignored) records."},
    {"summary", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(counts_summary)), METH_NOARGS,
     "The counts per (day, app, user) as a Block: line (int32 day), model_id (app), owner (user), games, "
     "parties_created, parties_joined."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot counts_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(counts_dealloc)},
    {Py_tp_methods, counts_methods},
    {Py_tp_doc, const_cast<char*>("Per-(day, app, user) counts of records decoded with counts= (see counts()).")},
    {0, nullptr},
};

PyType_Spec counts_spec = {"bubbly_metrics._fastscan.Counts", sizeof(CountsObject), 0, Py_TPFLAGS_DEFAULT,
                           counts_slots};

// counts(first_day, last_day) -> Counts for a range of epoch days.
PyObject* new_counts(PyObject*, PyObject* args) {
    long long first_day, last_day;
    if (!PyArg_ParseTuple(args, "LL", &first_day, &last_day)) return nullptr;
    auto* object = PyObject_New(CountsObject, CountsType);
    if (object == nullptr) return nullptr;
    object->counts = new (std::nothrow) Counts();
    if (object->counts == nullptr) {
        Py_DECREF(object);
        return PyErr_NoMemory();
    }
    object->counts->first_day = first_day;
    object->counts->last_day = last_day;
    return reinterpret_cast<PyObject*>(object);
}

const char* last_newline(const char* bytes, size_t len) {
    for (size_t i = len; i > 0; --i) {
        if (bytes[i - 1] == '\n') return bytes + i - 1;
    }
    return nullptr;
}

// decode(pieces, first_line, incremental, complete_lines_only, wanted, into=None)
//     -> None | (Block | None, lines, deletes, rest | None)
PyObject* decode(PyObject*, PyObject* args) {
    PyObject* pieces;
    unsigned long first_line;
    int incremental, complete_lines_only;
    unsigned int wanted;
    PyObject* into = Py_None;
    PyObject* counts_object = Py_None;
    if (!PyArg_ParseTuple(args, "O!kppI|OO", &PyList_Type, &pieces, &first_line, &incremental, &complete_lines_only,
                          &wanted, &into, &counts_object))
        return nullptr;
    Counts* counts = nullptr;
    if (counts_object != Py_None && (counts = counts_of(counts_object)) == nullptr) return nullptr;
    BlockObject* target = nullptr;
    if (into != Py_None) {
        if (!PyObject_TypeCheck(into, BlockType)) {
            PyErr_SetString(PyExc_TypeError, "into must be a Block");
            return nullptr;
        }
        target = reinterpret_cast<BlockObject*>(into);
        if (target->columns == nullptr) {
            PyErr_SetString(PyExc_ValueError, "this block was already exported");
            return nullptr;
        }
        if (target->columns->wanted != (wanted & ((1u << N_STRING_COLUMNS) - 1))) {
            PyErr_SetString(PyExc_ValueError, "into was built for other columns");
            return nullptr;
        }
    }
    // The pieces' pointers and sizes, read once (the stable ABI has functions, not macros).
    const Py_ssize_t count = PyList_Size(pieces);
    std::vector<std::string_view> views;
    try {
        views.reserve(static_cast<size_t>(count));
    } catch (const std::bad_alloc&) {
        return PyErr_NoMemory();
    }
    size_t total = 0;
    for (Py_ssize_t i = 0; i < count; ++i) {
        PyObject* piece = PyList_GetItem(pieces, i);
        char* bytes;
        Py_ssize_t len;
        if (piece == nullptr || !PyBytes_Check(piece) || PyBytes_AsStringAndSize(piece, &bytes, &len) < 0) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "pieces must be a list of bytes");
            return nullptr;
        }
        views.emplace_back(bytes, static_cast<size_t>(len));
        total += static_cast<size_t>(len);
    }
    // String offsets are int32: a block that could take them past it is left to msgspec.
    size_t held = 0;
    if (target != nullptr) {
        for (const auto& column : target->columns->strings) held = std::max(held, column.data.size());
    }
    if (total + held > static_cast<size_t>(INT32_MAX) / 2) Py_RETURN_NONE;
    // The block ends after the last '\n' (or at the end): the rest waits for more input.
    size_t cut = total;
    if (complete_lines_only) {
        cut = 0;
        size_t end = total;
        for (Py_ssize_t i = count - 1; i >= 0; --i) {
            const std::string_view piece = views[static_cast<size_t>(i)];
            end -= piece.size();
            const char* nl = last_newline(piece.data(), piece.size());
            if (nl != nullptr) {
                cut = end + static_cast<size_t>(nl - piece.data()) + 1;
                break;
            }
        }
    }
    if (cut == 0) return Py_BuildValue("(Oiis)", target != nullptr ? into : Py_None, 0, 0, nullptr);
    // The lines are parsed where they lie in the pieces (decode_lines); a line that crosses
    // pieces is copied into a buffer each thread keeps, as it keeps its parser.
    thread_local std::vector<uint8_t> line;
    thread_local simdjson::dom::parser parser;
    thread_local bool parser_ready = false;
    if (!parser_ready) {
        // Deeper lines are declined: msgspec's limit is Python's recursion limit (~1000, less
        // the caller's frames), and a line simdjson took there would be one msgspec cannot
        // read.  DynamoDB nests at most 32 levels (about 70 in its JSON).
        if (parser.allocate(1 << 16, MAX_DEPTH) != simdjson::SUCCESS) return PyErr_NoMemory();
        parser_ready = true;
    }
    PyObject* rest = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(total - cut));
    if (rest == nullptr) return nullptr;
    char* rest_bytes = PyBytes_AsString(rest);
    if (rest_bytes == nullptr) {
        Py_DECREF(rest);
        return nullptr;
    }
    size_t at = 0;
    for (const std::string_view piece : views) {
        const size_t len = piece.size();
        const size_t head = at < cut ? std::min(len, cut - at) : 0;
        if (len > head) std::memcpy(rest_bytes + (at + head - cut), piece.data() + head, len - head);
        at += len;
    }
    // The pieces are read with the GIL released: a reference to each keeps its bytes alive
    // whatever happens to the list meanwhile.
    std::vector<PyObject*> held_pieces;
    try {
        held_pieces.reserve(static_cast<size_t>(count));
    } catch (const std::bad_alloc&) {
        Py_DECREF(rest);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < count; ++i) {
        PyObject* piece = PyList_GetItem(pieces, i);
        Py_INCREF(piece);
        held_pieces.push_back(piece);
    }
    struct Release {
        std::vector<PyObject*>& objects;
        ~Release() {
            for (PyObject* object : objects) Py_DECREF(object);
        }
    } release{held_pieces};

    Columns* columns = target != nullptr ? target->columns : new (std::nothrow) Columns();
    if (columns == nullptr) {
        Py_DECREF(rest);
        return PyErr_NoMemory();
    }
    if (target == nullptr) columns->wanted = wanted & ((1u << N_STRING_COLUMNS) - 1);
    const Columns::Mark mark = columns->mark();
    size_t lines = 0, deletes = 0;
    bool ok = false, out_of_memory = false;
    // The GIL is released: a Block must not be used by two threads at once (the scan keeps one
    // per data file being read).
    Py_BEGIN_ALLOW_THREADS
    try {
        columns->reserve(cut);
        if (counts != nullptr) counts->begin();
        ok = decode_lines(parser, views, cut, line, static_cast<uint32_t>(first_line), incremental, *columns, counts,
                          lines, deletes);
        if (ok && counts != nullptr) counts->flush();
    } catch (const std::bad_alloc&) {
        ok = false;
        out_of_memory = true;
    }
    if (!ok) {
        columns->rollback(mark);  // shrinking: never allocates
        if (counts != nullptr) counts->rollback();
    }
    Py_END_ALLOW_THREADS
    if (!ok) {
        if (target == nullptr) delete columns;
        Py_DECREF(rest);
        if (out_of_memory) return PyErr_NoMemory();
        Py_RETURN_NONE;
    }
    PyObject* block = reinterpret_cast<PyObject*>(target);
    if (target != nullptr) {
        Py_INCREF(block);
    } else {
        auto* created = PyObject_New(BlockObject, BlockType);
        if (created == nullptr) {
            delete columns;
            Py_DECREF(rest);
            return nullptr;
        }
        created->columns = columns;
        block = reinterpret_cast<PyObject*>(created);
    }
    return Py_BuildValue("(NnnN)", block, static_cast<Py_ssize_t>(lines), static_cast<Py_ssize_t>(deletes), rest);
}

// live_exports() -> how many exported blocks some consumer still holds.
PyObject* live_exports(PyObject*, PyObject*) { return PyLong_FromLong(live_exported.load()); }

PyMethodDef module_methods[] = {
    {"live_exports", live_exports, METH_NOARGS,
     "live_exports() -> int\n\n"
     "Blocks exported to Arrow whose columns are still held (a column kept zero-copy keeps its\n"
     "whole block: what a caller keeps of a block should be copied)."},
    {"counts", new_counts, METH_VARARGS,
     "counts(first_day, last_day) -> Counts\n\n"
     "Counts for decode(..., counts=): records with a plain outcome are counted per (day, app,\n"
     "user) for the epoch days [first_day, last_day] (or as outside it, or ignored) instead of\n"
     "becoming rows; malformed records and odd timestamps still become rows."},
    {"decode", decode, METH_VARARGS,
     "decode(pieces, first_line, incremental, complete_lines_only, wanted, into=None, counts=None)\n"
     "    -> None | (Block | None, lines, deletes, rest | None)\n\n"
     "Decode the lines in the concatenated bytes ``pieces`` (up to the last newline when\n"
     "``complete_lines_only``; ``rest`` is what follows it) into a new Block, or appended to\n"
     "``into`` (returned).  None declines: some line is not a plain record or delete, and the\n"
     "pieces (and ``into``) are left as they were for the reference decoder.  With ``counts``\n"
     "(a Counts), records with a plain outcome are counted there instead of appended (undone if\n"
     "the block is declined).  A None Block\n"
     "means there was no complete line and nothing to append to (``rest`` None: keep the\n"
     "pieces).  ``wanted`` has bit i set for each of COLUMNS[i] to build (``line`` always is)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_fastscan", "simdjson decoding of export lines into Arrow columns.",
                          -1, module_methods};

}  // namespace

PyMODINIT_FUNC PyInit__fastscan(void) {
    if (BlockType == nullptr) {
        BlockType = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&block_spec));
        if (BlockType == nullptr) return nullptr;
    }
    if (CountsType == nullptr) {
        CountsType = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&counts_spec));
        if (CountsType == nullptr) return nullptr;
    }
    PyObject* module = PyModule_Create(&module_def);
    if (module == nullptr) return nullptr;
    PyObject* names = PyTuple_New(N_STRING_COLUMNS);
    if (names == nullptr) {
        Py_DECREF(module);
        return nullptr;
    }
    for (int i = 0; i < N_STRING_COLUMNS; ++i) {
        PyObject* name = PyUnicode_FromString(COLUMN_NAMES[i + 1]);
        if (name == nullptr) {
            Py_DECREF(names);
            Py_DECREF(module);
            return nullptr;
        }
        if (PyTuple_SetItem(names, i, name) < 0) {  // steals name, even on failure
            Py_DECREF(names);
            Py_DECREF(module);
            return nullptr;
        }
    }
    if (PyModule_AddObject(module, "COLUMNS", names) < 0) {
        Py_DECREF(names);
        Py_DECREF(module);
        return nullptr;
    }
    return module;
}
