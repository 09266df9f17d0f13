/* SPDX-License-Identifier: MIT */
/* master_merge.c - one answer from many: the master merges its workers'
 * answers to a control command.
 *
 * JSON answers are read back into value trees (config/value.h) and merged
 * key by key: numbers add up, objects merge by key, lists of objects with a
 * "name" merge by name (and draining state), other lists of objects are joined, lists of names
 * are united. A worker also reports its latency histograms as raw buckets
 * ("latency_buckets"), which add up like any list of numbers; percentiles
 * are computed from the sum, as percentiles of sums cannot be added. The
 * Prometheus text is merged series by series, and series only the master
 * knows (uptime, reloads, its start time) come from the master alone. */
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "master.h"
#include "metrics.h"

/* ---- reading JSON ------------------------------------------------------------- */

typedef struct reader {
    const char *p, *end;
    int depth;
} reader;

static const tn_pos no_pos = { "", 0, 0 };

static void skip_ws(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

static void put_utf8(char *out, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xc0 | cp >> 6);
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xe0 | cp >> 12);
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*n)++] = (char)(0xf0 | cp >> 18);
        out[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static int hex4(const char *p, const char *end, unsigned *v)
{
    if (end - p < 4)
        return -1;
    char buf[5] = { p[0], p[1], p[2], p[3], 0 };
    char *e;
    *v = (unsigned)strtoul(buf, &e, 16);
    return *e ? -1 : 0;
}

/* A string at r->p (after its quote) into a new buffer; NULL if malformed. */
static char *read_string(reader *r, size_t *len)
{
    char *out = malloc((size_t)(r->end - r->p) + 1);
    size_t n = 0;
    while (out && r->p < r->end && *r->p != '"') {
        char c = *r->p++;
        if (c != '\\') {
            out[n++] = c;
            continue;
        }
        if (r->p >= r->end)
            break;
        c = *r->p++;
        unsigned cp;
        switch (c) {
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'r': out[n++] = '\r'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'u':
            if (hex4(r->p, r->end, &cp) < 0) {
                free(out);
                return NULL;
            }
            r->p += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
                unsigned lo;
                if (hex4(r->p + 2, r->end, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    r->p += 6;
                }
            }
            put_utf8(out, &n, cp);
            break;
        default: out[n++] = c; break;
        }
    }
    if (!out || r->p >= r->end) {
        free(out);
        return NULL;
    }
    r->p++;
    out[n] = '\0';
    *len = n;
    return out;
}

static tn_value *read_value(reader *r)
{
    skip_ws(r);
    if (r->p >= r->end || ++r->depth > 64)
        return NULL;
    tn_value *v = NULL;
    char c = *r->p;
    if (c == '{' || c == '[') {
        r->p++;
        v = tn_value_new(c == '{' ? TN_V_OBJECT : TN_V_ARRAY, no_pos);
        skip_ws(r);
        char close = c == '{' ? '}' : ']';
        if (r->p < r->end && *r->p == close) {
            r->p++;
        } else {
            while (v) {
                char *key = NULL;
                size_t klen;
                skip_ws(r);
                if (c == '{') {
                    if (r->p >= r->end || *r->p != '"')
                        goto bad;
                    r->p++;
                    key = read_string(r, &klen);
                    skip_ws(r);
                    if (!key || r->p >= r->end || *r->p != ':') {
                        free(key);
                        goto bad;
                    }
                    r->p++;
                }
                tn_value *item = read_value(r);
                if (!item) {
                    free(key);
                    goto bad;
                }
                if ((c == '{' ? tn_object_add(v, key, no_pos, item) : tn_array_push(v, item)) < 0)
                    goto bad;
                skip_ws(r);
                if (r->p < r->end && *r->p == ',') {
                    r->p++;
                    continue;
                }
                if (r->p < r->end && *r->p == close) {
                    r->p++;
                    break;
                }
                goto bad;
            }
        }
    } else if (c == '"') {
        r->p++;
        size_t len;
        char *s = read_string(r, &len);
        if (s)
            v = tn_value_string(s, len, no_pos);
        free(s);
    } else if (r->end - r->p >= 4 && memcmp(r->p, "true", 4) == 0) {
        r->p += 4;
        v = tn_value_bool(true, no_pos);
    } else if (r->end - r->p >= 5 && memcmp(r->p, "false", 5) == 0) {
        r->p += 5;
        v = tn_value_bool(false, no_pos);
    } else if (r->end - r->p >= 4 && memcmp(r->p, "null", 4) == 0) {
        r->p += 4;
        v = tn_value_new(TN_V_NULL, no_pos);
    } else {
        char num[64];
        size_t n = 0;
        bool frac = false;
        while (r->p < r->end && n < sizeof(num) - 1 && strchr("+-0123456789.eE", *r->p)) {
            frac = frac || strchr(".eE", *r->p);
            num[n++] = *r->p++;
        }
        num[n] = '\0';
        char *e;
        if (n && frac) {
            double f = strtod(num, &e);
            v = *e ? NULL : tn_value_new(TN_V_FLOAT, no_pos);
            if (v)
                v->u.f = f;
        } else if (n) {
            long long i = strtoll(num, &e, 10);
            v = *e ? NULL : tn_value_int(i, no_pos);
        }
    }
    r->depth--;
    return v;
bad:
    tn_value_free(v);
    return NULL;
}

static tn_value *parse(struct evbuffer *b)
{
    if (!b)
        return NULL;
    size_t len = evbuffer_get_length(b);
    reader r = { (const char *)evbuffer_pullup(b, -1), NULL, 0 };
    if (!r.p)
        return NULL;
    r.end = r.p + len;
    return read_value(&r);
}

/* ---- merging ------------------------------------------------------------------- */

static double num(const tn_value *v)
{
    return v->type == TN_V_INT ? (double)v->u.i : v->type == TN_V_FLOAT ? v->u.f : 0;
}

static bool is_num(const tn_value *v)
{
    return v && (v->type == TN_V_INT || v->type == TN_V_FLOAT);
}

static const char *name_of(const tn_value *v)
{
    const tn_value *n = v && v->type == TN_V_OBJECT ? tn_object_get(v, "name") : NULL;
    return n && n->type == TN_V_STRING ? n->u.s.ptr : NULL;
}

static void merge(tn_value *into, const tn_value *from, const char *key);

/* Rows with a name are the same row when the names are, and a listener
 * that drains (its address changed in a reload) is apart from the one that
 * took its name. */
static bool same_row(const tn_value *a, const tn_value *b)
{
    if (strcmp(name_of(a), name_of(b)) != 0)
        return false;
    const tn_value *da = tn_object_get(a, "draining"), *db = tn_object_get(b, "draining");
    bool xa = da && da->type == TN_V_BOOL && da->u.b, xb = db && db->type == TN_V_BOOL && db->u.b;
    return xa == xb;
}

static void merge_array(tn_value *into, const tn_value *from)
{
    bool numbers = into->u.a.len == from->u.a.len;
    for (size_t i = 0; i < into->u.a.len && numbers; i++)
        numbers = is_num(into->u.a.items[i]) && is_num(from->u.a.items[i]);
    if (numbers && into->u.a.len) {
        for (size_t i = 0; i < into->u.a.len; i++)
            merge(into->u.a.items[i], from->u.a.items[i], NULL);
        return;
    }
    for (size_t k = 0; k < from->u.a.len; k++) {
        const tn_value *item = from->u.a.items[k];
        const char *name = name_of(item);
        tn_value *same = NULL;
        for (size_t i = 0; i < into->u.a.len && !same && (name || item->type == TN_V_STRING); i++) {
            tn_value *o = into->u.a.items[i];
            if (name ? name_of(o) && same_row(o, item)
                     : o->type == TN_V_STRING && strcmp(o->u.s.ptr, item->u.s.ptr) == 0)
                same = o;
        }
        if (same && name)
            merge(same, item, NULL);
        else if (!same)
            tn_array_push(into, tn_value_clone(item));
    }
}

/* FROM added into INTO: numbers sum, "ok" and "draining" hold for all,
 * other flags for any; other scalars stay as the first worker said. */
static void merge(tn_value *into, const tn_value *from, const char *key)
{
    if (is_num(into) && is_num(from)) {
        if (into->type == TN_V_INT && from->type == TN_V_INT) {
            into->u.i += from->u.i;
        } else {
            into->u.f = num(into) + num(from);
            into->type = TN_V_FLOAT;
        }
    } else if (into->type == TN_V_BOOL && from->type == TN_V_BOOL) {
        bool all = key && (strcmp(key, "ok") == 0 || strcmp(key, "draining") == 0);
        into->u.b = all ? into->u.b && from->u.b : into->u.b || from->u.b;
    } else if (into->type == TN_V_OBJECT && from->type == TN_V_OBJECT) {
        for (size_t i = 0; i < from->u.o.len; i++) {
            const tn_member *fm = &from->u.o.items[i];
            tn_value *mine = tn_object_get(into, fm->key);
            if (mine)
                merge(mine, fm->val, fm->key);
            else
                tn_object_add(into, strdup(fm->key), no_pos, tn_value_clone(fm->val));
        }
    } else if (into->type == TN_V_ARRAY && from->type == TN_V_ARRAY) {
        merge_array(into, from);
    }
}

static void set_member(tn_value *obj, const char *key, tn_value *val)
{
    if (!val)
        return;
    tn_member *m = tn_object_find(obj, key);
    if (m) {
        tn_value_free(m->val);
        m->val = val;
    } else {
        tn_object_add(obj, strdup(key), no_pos, val);
    }
}

static void remove_member(tn_value *obj, const char *key)
{
    for (size_t i = 0; i < obj->u.o.len; i++) {
        if (strcmp(obj->u.o.items[i].key, key) == 0) {
            free(obj->u.o.items[i].key);
            tn_value_free(obj->u.o.items[i].val);
            memmove(&obj->u.o.items[i], &obj->u.o.items[i + 1], (obj->u.o.len - i - 1) * sizeof(tn_member));
            obj->u.o.len--;
            return;
        }
    }
}

static tn_value *float_value(double f)
{
    tn_value *v = tn_value_new(TN_V_FLOAT, no_pos);
    if (v)
        v->u.f = f;
    return v;
}

/* Percentiles from the summed buckets, which then go (workers' detail). */
static void percentiles(tn_value *v)
{
    if (!v)
        return;
    if (v->type == TN_V_ARRAY) {
        for (size_t i = 0; i < v->u.a.len; i++)
            percentiles(v->u.a.items[i]);
        return;
    }
    if (v->type != TN_V_OBJECT)
        return;
    for (size_t i = 0; i < v->u.o.len; i++)
        percentiles(v->u.o.items[i].val);
    tn_value *b = tn_object_get(v, "latency_buckets");
    if (!b || b->type != TN_V_ARRAY)
        return;
    tn_hist h = { 0 };
    for (size_t i = 0; i < b->u.a.len && i < TN_HIST_BUCKETS; i++) {
        h.buckets[i] = (uint64_t)num(b->u.a.items[i]);
        h.count += h.buckets[i];
    }
    static const double ps[] = { 0.50, 0.90, 0.99 };
    static const char *const flat[] = { "p50_ms", "p90_ms", "p99_ms" }, *const nested[] = { "p50", "p90", "p99" };
    tn_value *lat = tn_object_get(v, "latency_ms");
    for (int k = 0; k < 3; k++) {
        double ms = tn_hist_percentile(&h, ps[k]) / 1000;
        if (tn_object_get(v, flat[k]))
            set_member(v, flat[k], float_value(ms));
        if (lat && lat->type == TN_V_OBJECT)
            set_member(lat, nested[k], float_value(ms));
    }
    remove_member(v, "latency_buckets");
}

static tn_value *u64_value(uint64_t n)
{
    return tn_value_int((int64_t)n, no_pos);
}

/* The master's own process and counters, with what the workers add. */
static tn_value *merged_info(const tn_value *own_info, const tn_value *workers_info)
{
    tn_value *info = tn_value_clone(own_info);
    if (!info || !workers_info || workers_info->type != TN_V_OBJECT)
        return info;
    static const char *const summed[] = { "rss_bytes", "open_fds", "cpu_seconds" };
    for (size_t i = 0; i < 3; i++) {
        tn_value *a = tn_object_get(info, summed[i]), *b = tn_object_get(workers_info, summed[i]);
        if (is_num(a) && is_num(b))
            merge(a, b, summed[i]);
    }
    set_member(info, "connections", tn_value_clone(tn_object_get(workers_info, "connections")));
    return info;
}

static tn_value *string_value(const char *s)
{
    return tn_value_string(s, strlen(s), no_pos);
}

static const char *str_member(const tn_value *obj, const char *key)
{
    const tn_value *v = obj && obj->type == TN_V_OBJECT ? tn_object_get(obj, key) : NULL;
    return v && v->type == TN_V_STRING ? v->u.s.ptr : NULL;
}

/* Each worker has its own link to Redis: a worker's row shows its link, and
 * the top-level state is every worker's, not the first one's. */
static void cluster_rows(tn_value *root, tn_value *rows, tn_value **parsed, size_t n)
{
    tn_value *top = tn_object_get(root, "cluster");
    if (!top || top->type != TN_V_OBJECT)
        return;
    static const char *const per_worker[] = { "state", "since", "lost", "queued", "reconnects", "last_error" };
    uint64_t linked = 0, connected = 0, down = 0;
    for (size_t i = 0; i < n && i < rows->u.a.len; i++) {
        const tn_value *cl = parsed[i] ? tn_object_get(parsed[i], "cluster") : NULL;
        tn_value *row = cl && cl->type == TN_V_OBJECT ? tn_value_new(TN_V_OBJECT, no_pos) : NULL;
        if (!row)
            continue;
        for (size_t k = 0; k < sizeof(per_worker) / sizeof(per_worker[0]); k++) {
            const tn_value *v = tn_object_get(cl, per_worker[k]);
            if (v)
                tn_object_add(row, strdup(per_worker[k]), no_pos, tn_value_clone(v));
        }
        tn_object_add(rows->u.a.items[i], strdup("cluster"), no_pos, row);
        const char *state = str_member(cl, "state");
        linked++;
        connected += state && strcmp(state, "connected") == 0;
        down += state && strcmp(state, "down") == 0;
    }
    set_member(top, "state", string_value(connected == linked ? "connected"
                                          : connected             ? "partial"
                                          : down                  ? "down"
                                                                  : "connecting"));
    set_member(top, "workers_connected", u64_value(connected));
    set_member(top, "workers", u64_value(linked));
    const char *err = NULL;
    for (size_t i = 0; i < n && !err; i++)
        err = parsed[i] ? str_member(tn_object_get(parsed[i], "cluster"), "last_error") : NULL;
    if (err) /* the first worker may have none while another has */
        set_member(top, "last_error", string_value(err));
}

static void worker_rows(tn_value *root, tn_master_answer *answers, tn_value **parsed, size_t n, bool counters)
{
    tn_value *rows = tn_value_new(TN_V_ARRAY, no_pos);
    for (size_t i = 0; rows && i < n; i++) {
        tn_value *row = tn_value_new(TN_V_OBJECT, no_pos);
        if (!row)
            break;
        tn_object_add(row, strdup("slot"), no_pos, u64_value((uint64_t)answers[i].slot));
        tn_object_add(row, strdup("pid"), no_pos, u64_value((uint64_t)answers[i].pid));
        tn_object_add(row, strdup("generation"), no_pos, u64_value(answers[i].generation));
        tn_object_add(row, strdup("state"), no_pos, tn_value_string(answers[i].state, strlen(answers[i].state), no_pos));
        tn_object_add(row, strdup("restarts"), no_pos, u64_value(answers[i].restarts));
        tn_object_add(row, strdup("answered"), no_pos, tn_value_bool(parsed[i] != NULL, no_pos));
        const tn_value *global = parsed[i] && counters ? tn_object_get(parsed[i], "global") : NULL;
        if (global)
            tn_object_add(row, strdup("global"), no_pos, tn_value_clone(global));
        tn_array_push(rows, row);
    }
    if (rows && counters)
        cluster_rows(root, rows, parsed, n);
    set_member(root, "workers", rows);
}

static void merge_json(const char *name, tn_master_answer *answers, size_t n, struct evbuffer *own,
                       struct evbuffer *out)
{
    tn_value **parsed = calloc(n ? n : 1, sizeof(*parsed));
    tn_value *merged = NULL;
    for (size_t i = 0; parsed && i < n; i++) {
        parsed[i] = parse(answers[i].body);
        const tn_value *ok = parsed[i] && parsed[i]->type == TN_V_OBJECT ? tn_object_get(parsed[i], "ok") : NULL;
        if (ok && ok->type == TN_V_BOOL && !ok->u.b) {
            /* a refusal (usage, no such listener or connection) is the same from all */
            tn_value_free(merged);
            merged = tn_value_clone(parsed[i]);
            break;
        }
        if (!parsed[i])
            continue;
        /* each connection says which worker has it */
        tn_value *conns = parsed[i]->type == TN_V_OBJECT ? tn_object_get(parsed[i], "connections") : NULL;
        for (size_t k = 0; conns && conns->type == TN_V_ARRAY && k < conns->u.a.len; k++)
            if (conns->u.a.items[k]->type == TN_V_OBJECT)
                set_member(conns->u.a.items[k], "worker", u64_value((uint64_t)answers[i].slot));
        if (!merged)
            merged = tn_value_clone(parsed[i]);
        else
            merge(merged, parsed[i], NULL);
    }
    const tn_value *failed = merged ? tn_object_get(merged, "ok") : NULL;
    bool refused = failed && failed->type == TN_V_BOOL && !failed->u.b;
    if (!merged) {
        merged = tn_value_new(TN_V_OBJECT, no_pos);
        if (merged) {
            tn_object_add(merged, strdup("ok"), no_pos, tn_value_bool(false, no_pos));
            static const char msg[] = "no worker answered";
            tn_object_add(merged, strdup("error"), no_pos, tn_value_string(msg, sizeof(msg) - 1, no_pos));
        }
    } else if (!refused) {
        percentiles(merged);
        tn_value *mine = parse(own);
        bool stats = strcmp(name, "stats") == 0, info = strcmp(name, "info") == 0;
        if (mine && mine->type == TN_V_OBJECT && stats) {
            static const char *const keys[] = { "version", "uptime_seconds", "reloads", "reloads_ok",
                                                "reloads_refused" };
            for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                set_member(merged, keys[k], tn_value_clone(tn_object_get(mine, keys[k])));
            set_member(merged, "info", merged_info(tn_object_get(mine, "info"), tn_object_get(merged, "info")));
        } else if (mine && mine->type == TN_V_OBJECT && info) {
            tn_value *all = merged_info(mine, merged);
            tn_value_free(merged);
            merged = all;
        }
        if (merged && (stats || info))
            worker_rows(merged, answers, parsed, n, stats);
        tn_value_free(mine);
    }
    tn_json j;
    tn_json_init(&j, out);
    tn_json_value(&j, NULL, merged);
    tn_value_free(merged);
    for (size_t i = 0; parsed && i < n; i++)
        tn_value_free(parsed[i]);
    free(parsed);
}

/* ---- Prometheus text -------------------------------------------------------------- */

typedef struct sample {
    char *key;    /* name{labels} */
    char *text;   /* the value as one source wrote it */
    double value;
    int sources;
} sample;

typedef struct family {
    char *name;
    struct evbuffer *head; /* HELP and TYPE lines */
    sample *s;
    size_t n, cap;
    bool master_only;
} family;

typedef struct prom {
    family *f;
    size_t n, cap;
} prom;

static family *family_get(prom *p, const char *name, size_t len, bool master_source)
{
    for (size_t i = 0; i < p->n; i++)
        if (strlen(p->f[i].name) == len && memcmp(p->f[i].name, name, len) == 0)
            return &p->f[i];
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        family *f = realloc(p->f, cap * sizeof(*f));
        if (!f)
            return NULL;
        p->f = f;
        p->cap = cap;
    }
    family *f = &p->f[p->n++];
    memset(f, 0, sizeof(*f));
    f->name = strndup(name, len);
    f->head = evbuffer_new();
    /* what only the master knows, or what is one value for the whole daemon */
    static const char *const own[] = { "process_max_fds", "process_start_time_seconds", "tusknet_build_info",
                                       "tusknet_uptime_seconds", "tusknet_reloads_total",
                                       "tusknet_last_reload_successful", "tusknet_last_reload_timestamp_seconds" };
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]) && master_source; i++)
        f->master_only = f->master_only || strcmp(f->name, own[i]) == 0;
    return f;
}

static void add_sample(family *f, const char *key, size_t klen, const char *val)
{
    double v = strtod(val, NULL);
    for (size_t i = 0; i < f->n; i++) {
        sample *s = &f->s[i];
        if (strlen(s->key) == klen && memcmp(s->key, key, klen) == 0) {
            if (!f->master_only) {
                s->value += v;
                s->sources++;
            }
            return;
        }
    }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        sample *s = realloc(f->s, cap * sizeof(*s));
        if (!s)
            return;
        f->s = s;
        f->cap = cap;
    }
    f->s[f->n++] = (sample){ strndup(key, klen), strdup(val), v, 1 };
}

/* Adds one exposition; returns the sum of its tusknet_connections_active. */
static double prom_add(prom *p, struct evbuffer *b, bool master_source)
{
    double active = 0;
    if (!b)
        return 0;
    size_t len = evbuffer_get_length(b);
    const char *t = (const char *)evbuffer_pullup(b, -1), *end = t + len;
    family *cur = NULL;
    bool fresh = false;
    while (t && t < end) {
        const char *nl = memchr(t, '\n', (size_t)(end - t));
        const char *le = nl ? nl : end;
        size_t ll = (size_t)(le - t);
        if (ll > 7 && (memcmp(t, "# HELP ", 7) == 0 || memcmp(t, "# TYPE ", 7) == 0)) {
            const char *nm = t + 7, *sp = memchr(nm, ' ', (size_t)(le - nm));
            size_t nlen = sp ? (size_t)(sp - nm) : (size_t)(le - nm);
            if (!cur || strlen(cur->name) != nlen || memcmp(cur->name, nm, nlen) != 0) {
                size_t before = p->n;
                cur = family_get(p, nm, nlen, master_source);
                fresh = p->n > before;
            }
            if (cur && fresh)
                evbuffer_add(cur->head, t, ll + 1);
        } else if (ll && t[0] != '#' && cur) {
            const char *sp = t + ll;
            while (sp > t && sp[-1] != ' ')
                sp--;
            if (sp > t) {
                char val[64];
                snprintf(val, sizeof(val), "%.*s", (int)(le - sp), sp);
                add_sample(cur, t, (size_t)(sp - 1 - t), val);
                if (strcmp(cur->name, "tusknet_connections_active") == 0)
                    active += strtod(val, NULL);
            }
        }
        t = nl ? nl + 1 : end;
    }
    return active;
}

static void merge_prom(tn_master_answer *answers, size_t n, struct evbuffer *own, struct evbuffer *out)
{
    prom p = { 0 };
    prom_add(&p, own, true);
    double *active = calloc(n ? n : 1, sizeof(*active));
    for (size_t i = 0; i < n; i++) {
        double a = prom_add(&p, answers[i].body, false);
        if (active)
            active[i] = a;
    }
    for (size_t i = 0; i < p.n; i++) {
        family *f = &p.f[i];
        evbuffer_add_buffer(out, f->head);
        for (size_t k = 0; k < f->n; k++) {
            sample *s = &f->s[k];
            if (s->sources == 1)
                evbuffer_add_printf(out, "%s %s\n", s->key, s->text);
            else if (s->value == (double)(int64_t)s->value)
                evbuffer_add_printf(out, "%s %lld\n", s->key, (long long)s->value);
            else
                evbuffer_add_printf(out, "%s %.6f\n", s->key, s->value);
            free(s->key);
            free(s->text);
        }
        free(f->s);
        free(f->name);
        evbuffer_free(f->head);
    }
    free(p.f);
    evbuffer_add_printf(out, "# HELP tusknet_worker_up Worker processes, by slot, process id and state; always 1.\n"
                             "# TYPE tusknet_worker_up gauge\n");
    for (size_t i = 0; i < n; i++)
        evbuffer_add_printf(out, "tusknet_worker_up{worker=\"%d\",pid=\"%ld\",state=\"%s\"} 1\n", answers[i].slot,
                            answers[i].pid, answers[i].state);
    evbuffer_add_printf(out, "# HELP tusknet_worker_restarts_total Workers restarted after a crash, by slot.\n"
                             "# TYPE tusknet_worker_restarts_total counter\n");
    for (size_t i = 0; i < n; i++)
        evbuffer_add_printf(out, "tusknet_worker_restarts_total{worker=\"%d\",pid=\"%ld\"} %u\n", answers[i].slot,
                            answers[i].pid, answers[i].restarts);
    evbuffer_add_printf(out, "# HELP tusknet_worker_connections_active Connections open now, by worker.\n"
                             "# TYPE tusknet_worker_connections_active gauge\n");
    for (size_t i = 0; i < n && active; i++)
        evbuffer_add_printf(out, "tusknet_worker_connections_active{worker=\"%d\",pid=\"%ld\"} %.0f\n",
                            answers[i].slot, answers[i].pid, active[i]);
    free(active);
    evbuffer_add(out, "# EOF\n", 6);
}

void tn_master_merge(const char *name, tn_master_answer *answers, size_t n, struct evbuffer *own,
                     struct evbuffer *out)
{
    if (strcmp(name, "metrics") == 0) {
        merge_prom(answers, n, own, out);
        return;
    }
    merge_json(name, answers, n, own, out);
}
