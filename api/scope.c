/* Departments: named read tokens, each limited to a part of the city
 * (docs/api.md "Departments").
 *
 * A department is one http.department line:
 *     NAME token=SECRET|sha256:HEX [topic=FILTER]... [label=NAME=V1[,V2...]]...
 * Its scope is what it may read: a sensor (a topic) is in scope when it
 * matches one of the topic filters (MQTT filters, + and #; none given: any
 * topic) and, for every limited label, the topic's value of that label (read
 * through sensors.label_pattern) is one of the values given. Everything else
 * that a read route answers is judged through the sensors it speaks of: an
 * alert by its rule's match patterns with the alert's labels put in (every
 * topic they can match must be in scope), a rule by whether its patterns can
 * reach the scope at all.
 *
 * Every read route asks api__read_scope() who is asking; a route that
 * answers sensor data then asks api__scope_allows_topic() /
 * api__scope_allows_pattern() / api__scope_allows_alert() of each item, or
 * filters a whole provider answer with api__scope_filter(). There is no
 * other place a department is checked. */
#include "api/api_int.h"
#include "base/log.h"
#include "rules/rules.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- levels ------------------------------------------------------------------ */

/* One level of a topic or pattern: [p, p + len). */
struct level {
    const char *p;
    size_t len;
};

/* Splits s on '/' into at most max levels. Returns the count, or -1 when
 * there are more. */
static int split(const char *s, struct level *lv, int max)
{
    int n = 0;
    for (;;) {
        const char *slash = strchr(s, '/');
        size_t len = slash ? (size_t)(slash - s) : strlen(s);
        if (n == max)
            return -1;
        lv[n++] = (struct level){s, len};
        if (!slash)
            return n;
        s = slash + 1;
    }
}

#define MAX_LEVELS 32

static int is(const struct level *l, const char *lit)
{
    return l->len == strlen(lit) && memcmp(l->p, lit, l->len) == 0;
}

/* A level standing for many values: +, # or a {capture}. */
static int wild(const struct level *l)
{
    return is(l, "+") || is(l, "#") || (l->len >= 2 && l->p[0] == '{');
}

static int same(const struct level *a, const struct level *b)
{
    return a->len == b->len && memcmp(a->p, b->p, a->len) == 0;
}

/* Whether the MQTT filter f matches every topic the pattern p matches. */
static int subsumes(const struct level *f, int nf, const struct level *p, int np)
{
    for (int i = 0; i < nf; i++) {
        if (is(&f[i], "#"))
            return 1; /* also the parent level: "a/#" matches "a" */
        if (i == np)
            return 0;
        if (is(&p[i], "#"))
            return 0;
        if (!is(&f[i], "+") && (wild(&p[i]) || !same(&f[i], &p[i])))
            return 0;
    }
    return nf == np;
}

/* Whether some topic matches both f and p. */
static int meets(const struct level *f, int nf, const struct level *p, int np)
{
    for (int i = 0; i < nf && i < np; i++) {
        if (is(&f[i], "#") || is(&p[i], "#"))
            return 1;
        if (!wild(&f[i]) && !wild(&p[i]) && !same(&f[i], &p[i]))
            return 0;
    }
    return nf == np || (nf == np + 1 && is(&f[np], "#")) || (np == nf + 1 && is(&p[nf], "#"));
}

/* ---- the scope object ---------------------------------------------------------- */

static int value_allowed(const struct api_label_limit *lim, const struct level *v)
{
    for (size_t k = 0; k < lim->nvalues; k++)
        if (strlen(lim->values[k]) == v->len && !memcmp(lim->values[k], v->p, v->len))
            return 1;
    return 0;
}

/* The label limit of the label pattern's level i, or NULL. */
static const struct api_label_limit *limit_at(const struct api_scope *s, int i)
{
    for (size_t k = 0; k < s->nlabels; k++)
        if (s->labels[k].level == i)
            return &s->labels[k];
    return NULL;
}

/* Whether every topic the pattern matches has, through the label pattern,
 * an allowed value of every limited label (exact: no wildcard at a limited
 * level, literal levels of the label pattern equal). */
static int labels_cover(const struct api_scope *s, const struct level *p, int np)
{
    if (s->nlabels == 0)
        return 1;
    struct level lp[MAX_LEVELS];
    int nl = split(s->label_pattern, lp, MAX_LEVELS);
    for (int i = 0; i < nl; i++) {
        if (is(&lp[i], "#"))
            return 1;
        if (i == np || is(&p[i], "#"))
            return 0;
        const struct api_label_limit *lim = limit_at(s, i);
        if (lim) {
            if (wild(&p[i]) || !value_allowed(lim, &p[i]))
                return 0;
        } else if (!wild(&lp[i]) && !same(&lp[i], &p[i])) {
            return 0;
        }
    }
    return nl == np;
}

/* Whether some topic the pattern matches has allowed values of every limited
 * label. */
static int labels_meet(const struct api_scope *s, const struct level *p, int np)
{
    if (s->nlabels == 0)
        return 1;
    struct level lp[MAX_LEVELS];
    int nl = split(s->label_pattern, lp, MAX_LEVELS);
    if (!meets(lp, nl, p, np))
        return 0;
    for (int i = 0; i < nl && i < np && !is(&p[i], "#"); i++) {
        const struct api_label_limit *lim = limit_at(s, i);
        if (lim && !wild(&p[i]) && !value_allowed(lim, &p[i]))
            return 0;
    }
    return 1;
}

/* The scope's two tests of a pattern: the label limits' and, against each
 * topic filter (any of them will do), the filters'. */
static int scope_test(const struct api_scope *s, const char *pattern,
                      int (*labels)(const struct api_scope *, const struct level *, int),
                      int (*filter)(const struct level *, int, const struct level *, int))
{
    if (!s)
        return 1;
    struct level p[MAX_LEVELS], f[MAX_LEVELS];
    int np = split(pattern, p, MAX_LEVELS);
    if (np < 0 || !labels(s, p, np))
        return 0;
    if (s->ntopics == 0)
        return 1;
    for (size_t k = 0; k < s->ntopics; k++) {
        int nf = split(s->topics[k], f, MAX_LEVELS);
        if (filter(f, nf, p, np))
            return 1;
    }
    return 0;
}

int api__scope_allows_pattern(const struct api_scope *s, const char *pattern)
{
    return scope_test(s, pattern, labels_cover, subsumes);
}

int api__scope_allows_topic(const struct api_scope *s, const char *topic)
{
    /* A topic name holds no wildcard; one that does (or a '{') is refused
     * rather than read as a pattern. */
    if (s && strpbrk(topic, "+#{"))
        return 0;
    return api__scope_allows_pattern(s, topic);
}

int api__scope_meets_pattern(const struct api_scope *s, const char *pattern)
{
    return scope_test(s, pattern, labels_meet, meets);
}

int api__scope_allows_labels(const struct api_scope *s, const char *const *names,
                             const char *const *values, size_t n)
{
    if (!s)
        return 1;
    if (s->ntopics > 0 || s->nlabels == 0)
        return 0; /* labels alone say nothing of topics */
    for (size_t k = 0; k < s->nlabels; k++) {
        size_t i = 0;
        while (i < n && strcmp(names[i], s->labels[k].name))
            i++;
        if (i == n)
            return 0;
        struct level v = {values[i], strlen(values[i])};
        if (!value_allowed(&s->labels[k], &v))
            return 0;
    }
    return 1;
}

/* ---- alerts -------------------------------------------------------------------- */

/* pattern with each {label} that the labels (names[i] = values[i]) have
 * replaced by its value, into out. */
static void fill_labels(const char *pattern, const char *const *names, const char *const *values,
                        size_t n, struct cb_strbuf *out)
{
    cb_strbuf_reset(out);
    for (const char *c = pattern; *c;) {
        const char *close = *c == '{' ? strchr(c, '}') : NULL;
        if (close) {
            size_t len = (size_t)(close - c - 1), i = 0;
            while (i < n && (strlen(names[i]) != len || memcmp(names[i], c + 1, len)))
                i++;
            if (i < n)
                cb_strbuf_puts(out, values[i]);
            else
                cb_strbuf_append(out, c, (size_t)(close + 1 - c));
            c = close + 1;
            continue;
        }
        cb_strbuf_putc(out, *c++);
    }
}

/* The rules of the running rule set ({"rules":[{name, match:[...]}...]}),
 * parsed; NULL when the provider has none or cannot say. Loop thread. */
static cJSON *rules_now(struct cb_api *api)
{
    if (!api->prov.rules_list)
        return NULL;
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    int st = api->prov.rules_list(api->prov.ctx, &out);
    cJSON *j = st == 200 && !out.oom ? cJSON_ParseWithLength(out.data, out.len) : NULL;
    cb_strbuf_free(&out);
    return j;
}

static int rule_cmp(const void *x, const void *y)
{
    const cJSON *a = *(const cJSON *const *)x, *b = *(const cJSON *const *)y;
    return strcmp(cJSON_GetObjectItemCaseSensitive(a, "name")->valuestring,
                  cJSON_GetObjectItemCaseSensitive(b, "name")->valuestring);
}

int api__judge_init(struct cb_api *api, const struct api_scope *s, struct api_judge *j)
{
    memset(j, 0, sizeof *j);
    j->s = s;
    if (!s)
        return 0;
    j->rules = rules_now(api);
    size_t n = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j->rules, "rules"));
    j->byname = calloc(n ? n : 1, sizeof *j->byname);
    if (!j->byname)
        return -1;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(j->rules, "rules"))
    {
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r, "name")))
            j->byname[j->n++] = r;
    }
    qsort(j->byname, j->n, sizeof *j->byname, rule_cmp);
    return 0;
}

void api__judge_free(struct api_judge *j)
{
    cJSON_Delete(j->rules);
    free(j->byname);
    memset(j, 0, sizeof *j);
}

/* The rule named `name` of the judge's rule set, or NULL. */
static const cJSON *rule_named(const struct api_judge *j, const char *name)
{
    size_t lo = 0, hi = j->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(cJSON_GetObjectItemCaseSensitive(j->byname[mid], "name")->valuestring,
                       name);
        if (c == 0)
            return j->byname[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int api__judge_alert(const struct api_judge *j, const char *rule, const char *const *names,
                     const char *const *values, size_t n)
{
    if (!j->s)
        return 1;
    const cJSON *r = rule ? rule_named(j, rule) : NULL;
    const cJSON *match = r ? cJSON_GetObjectItemCaseSensitive(r, "match") : NULL;
    if (cJSON_GetArraySize(match) > 0) {
        struct cb_strbuf b;
        cb_strbuf_init(&b);
        int ok = 1;
        const cJSON *m;
        cJSON_ArrayForEach(m, match)
        {
            if (!cJSON_IsString(m))
                continue;
            fill_labels(m->valuestring, names, values, n, &b);
            ok = ok && !b.oom && api__scope_allows_pattern(j->s, b.data ? b.data : "");
        }
        cb_strbuf_free(&b);
        return ok;
    }
    /* A rule no longer loaded (history, resolved alerts): its labels only. */
    return api__scope_allows_labels(j->s, names, values, n);
}

int cb_api_alert_kept(const struct cb_api_alert_filter *f, const struct cb_transition *t)
{
    if (!f->keep)
        return 1;
    const char *names[API_JUDGE_MAX_LABELS], *values[API_JUDGE_MAX_LABELS];
    if (t->nlabels > API_JUDGE_MAX_LABELS)
        return 0;
    for (size_t i = 0; i < t->nlabels; i++) {
        names[i] = t->labels[i].name;
        values[i] = t->labels[i].value;
    }
    return f->keep(f->keep_ctx, t->rule, names, values, t->nlabels);
}

/* Whether the alert (or transition) object is in scope. */
static int alert_allowed(const struct api_judge *j, const cJSON *alert)
{
    const cJSON *rule = cJSON_GetObjectItemCaseSensitive(alert, "rule");
    const char *names[API_JUDGE_MAX_LABELS], *values[API_JUDGE_MAX_LABELS];
    size_t n = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, cJSON_GetObjectItemCaseSensitive(alert, "labels"))
    {
        if (!cJSON_IsString(l))
            continue;
        if (n == API_JUDGE_MAX_LABELS)
            return 0; /* more than a judge reads: out, when in doubt */
        names[n] = l->string;
        values[n++] = l->valuestring;
    }
    return api__judge_alert(j, cJSON_IsString(rule) ? rule->valuestring : NULL, names, values, n);
}

int api__scope_allows_alert(struct cb_api *api, const struct api_scope *s, const char *json,
                            size_t len)
{
    if (!s)
        return 1;
    struct api_judge j;
    cJSON *a = cJSON_ParseWithLength(json, len);
    int ok = a && api__judge_init(api, s, &j) == 0 && alert_allowed(&j, a);
    if (a)
        api__judge_free(&j);
    cJSON_Delete(a);
    return ok;
}

/* ---- filtering whole answers ------------------------------------------------------ */

/* Whether one item of a list answer is in scope. */
static int item_allowed(const struct api_judge *j, enum api_scope_list kind, cJSON *item)
{
    const struct api_scope *s = j->s;
    switch (kind) {
    case API_LIST_SENSORS: {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(item, "topic");
        return cJSON_IsString(t) && api__scope_allows_topic(s, t->valuestring);
    }
    case API_LIST_ALERTS:
    case API_LIST_TRANSITIONS:
        return alert_allowed(j, item);
    case API_LIST_RULES: {
        const cJSON *m;
        int any = 0;
        cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(item, "match"))
            any = any || (cJSON_IsString(m) && api__scope_meets_pattern(s, m->valuestring));
        /* the counts are the whole city's */
        cJSON_DeleteItemFromObjectCaseSensitive(item, "instances");
        cJSON_DeleteItemFromObjectCaseSensitive(item, "firing");
        return any;
    }
    case API_LIST_FEATURES: {
        /* District outlines (no topic) stay; a sensor's point only in scope. */
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(item, "properties"), "topic");
        return !cJSON_IsString(t) || api__scope_allows_topic(s, t->valuestring);
    }
    }
    return 0;
}

int api__scope_filter(struct cb_api *api, const struct api_scope *s, enum api_scope_list kind,
                      struct cb_strbuf *out)
{
    static const char *const members[] = {
        [API_LIST_SENSORS] = "sensors", [API_LIST_ALERTS] = "alerts",
        [API_LIST_TRANSITIONS] = "transitions", [API_LIST_RULES] = "rules",
        [API_LIST_FEATURES] = "features",
    };
    if (!s)
        return 0;
    cJSON *doc = out->oom ? NULL : cJSON_ParseWithLength(out->data, out->len);
    cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, members[kind]);
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(doc);
        return -1;
    }
    struct api_judge j = {.s = s};
    if ((kind == API_LIST_ALERTS || kind == API_LIST_TRANSITIONS) && api__judge_init(api, s, &j)) {
        api__judge_free(&j);
        cJSON_Delete(doc);
        return -1;
    }
    for (cJSON *it = list->child, *next; it; it = next) {
        next = it->next;
        if (!item_allowed(&j, kind, it))
            cJSON_Delete(cJSON_DetachItemViaPointer(list, it));
    }
    api__judge_free(&j);
    char *text = cJSON_PrintUnformatted(doc);
    cJSON_Delete(doc);
    if (!text)
        return -1;
    cb_strbuf_reset(out);
    cb_strbuf_puts(out, text);
    free(text);
    return out->oom ? -1 : 0;
}

/* ---- tokens -------------------------------------------------------------------- */

/* Compares without an early exit, so the time taken says nothing about how
 * much of a guessed token was right (the length is compared the same way). */
static int plain_equal(const char *given, size_t glen, const char *want)
{
    size_t wlen = strlen(want);
    unsigned char diff = (unsigned char)(glen != wlen);
    for (size_t i = 0; i < glen; i++)
        diff |= (unsigned char)(given[i] ^ want[wlen ? i % wlen : 0]);
    return wlen > 0 && diff == 0;
}

/* Reads "sha256:" and 64 hex digits into d. Returns 0, or -1. */
static int parse_sha256(const char *s, unsigned char d[32])
{
    static const char hex[] = "0123456789abcdefABCDEF";
    if (strncmp(s, "sha256:", 7) || strlen(s + 7) != 64 || strspn(s + 7, hex) != 64)
        return -1;
    for (int i = 0; i < 32; i++)
        if (sscanf(s + 7 + 2 * i, "%2hhx", &d[i]) != 1)
            return -1;
    return 0;
}

int api__token_matches(const char *given, size_t glen, const char *stored)
{
    if (!stored || !*stored)
        return 0;
    unsigned char want[32], got[32];
    if (parse_sha256(stored, want) == 0) {
        SHA256((const unsigned char *)given, glen, got);
        return CRYPTO_memcmp(want, got, sizeof got) == 0;
    }
    return plain_equal(given, glen, stored);
}

/* ---- configuration -------------------------------------------------------------- */

static void free_scope(struct api_scope *s)
{
    free(s->name);
    free(s->token);
    for (size_t k = 0; k < s->ntopics; k++)
        free(s->topics[k]);
    free(s->topics);
    for (size_t k = 0; k < s->nlabels; k++) {
        for (size_t v = 0; v < s->labels[k].nvalues; v++)
            free(s->labels[k].values[v]);
        free(s->labels[k].values);
        free(s->labels[k].name);
    }
    free(s->labels);
}

void api__scopes_free(struct api_scope *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free_scope(&v[i]);
    free(v);
}

/* A topic filter as MQTT has it: levels not empty of meaning, + and # whole
 * levels, # last. Returns NULL or what is wrong. */
static const char *check_filter(const char *f)
{
    struct level lv[MAX_LEVELS];
    int n = *f ? split(f, lv, MAX_LEVELS) : 0;
    if (n <= 0)
        return n == 0 ? "is empty" : "has more than 32 levels";
    for (int i = 0; i < n; i++) {
        if (memchr(lv[i].p, '{', lv[i].len) || memchr(lv[i].p, '}', lv[i].len))
            return "is an MQTT filter: + and # are its wildcards, not {label}";
        if ((memchr(lv[i].p, '+', lv[i].len) || memchr(lv[i].p, '#', lv[i].len)) &&
            lv[i].len != 1)
            return "has + or # inside a level";
        if (is(&lv[i], "#") && i != n - 1)
            return "has # before the last level";
    }
    return NULL;
}

static int push(char ***v, size_t *n, const char *s, size_t len)
{
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv)
        return -1;
    *v = nv;
    if (!(nv[*n] = strndup(s, len)))
        return -1;
    (*n)++;
    return 0;
}

/* label=NAME=V1[,V2...] into s (values append to a label given before). */
static const char *add_label(struct api_scope *s, const char *spec, const char *label_pattern,
                             char *err, size_t errlen)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1]) {
        snprintf(err, errlen, "label=%s is not label=NAME=VALUE[,VALUE...]", spec);
        return err;
    }
    size_t nlen = (size_t)(eq - spec);
    struct level lp[MAX_LEVELS];
    int nl = *label_pattern ? split(label_pattern, lp, MAX_LEVELS) : 0, level = -1;
    for (int i = 0; i < nl && level < 0; i++)
        if (lp[i].len == nlen + 2 && lp[i].p[0] == '{' && !memcmp(lp[i].p + 1, spec, nlen))
            level = i;
    if (level < 0) {
        snprintf(err, errlen, "label '%.*s' is not a {label} of sensors.label_pattern '%s'",
                 (int)nlen, spec, label_pattern);
        return err;
    }
    struct api_label_limit *lim = (struct api_label_limit *)limit_at(s, level);
    if (!lim) {
        struct api_label_limit *nv = realloc(s->labels, (s->nlabels + 1) * sizeof *nv);
        if (!nv)
            return "out of memory";
        s->labels = nv;
        lim = &nv[s->nlabels++];
        *lim = (struct api_label_limit){.name = strndup(spec, nlen), .level = level};
        if (!lim->name)
            return "out of memory";
    }
    for (const char *v = eq + 1; *v;) {
        size_t vlen = strcspn(v, ",");
        if (vlen == 0 || memchr(v, '/', vlen)) {
            snprintf(err, errlen, "label=%s has an empty value or one with '/'", spec);
            return err;
        }
        if (push(&lim->values, &lim->nvalues, v, vlen))
            return "out of memory";
        v += vlen + (v[vlen] == ',');
    }
    return NULL;
}

/* One http.department line into s. Returns NULL, or what is wrong. */
static const char *parse_line(struct api_scope *s, const char *line, const char *label_pattern,
                              char *err, size_t errlen)
{
    char *copy = strdup(line);
    if (!copy)
        return "out of memory";
    const char *e = NULL;
    char *save = NULL;
    for (char *w = strtok_r(copy, " \t", &save); w && !e; w = strtok_r(NULL, " \t", &save)) {
        if (!s->name) {
            if (strchr(w, '=') || strspn(w, "abcdefghijklmnopqrstuvwxyz0123456789_-") !=
                                      strlen(w)) {
                snprintf(err, errlen, "the department's name comes first: a word of a-z, 0-9, "
                                      "_ and -, not '%.40s'", w);
                e = err;
            } else if (!(s->name = strdup(w))) {
                e = "out of memory";
            }
        } else if (!strncmp(w, "token=", 6)) {
            if (s->token) {
                snprintf(err, errlen, "token= is given twice");
                e = err;
            } else if (!strncmp(w + 6, "sha256:", 7) && parse_sha256(w + 6, (unsigned char[32]){0})) {
                snprintf(err, errlen, "token=sha256: needs 64 hex digits (sha256sum of the token)");
                e = err;
            } else if (!(s->token = strdup(w + 6))) {
                e = "out of memory";
            }
        } else if (!strncmp(w, "topic=", 6)) {
            const char *why = check_filter(w + 6);
            if (why) {
                snprintf(err, errlen, "topic filter '%.80s' %s", w + 6, why);
                e = err;
            } else if (push(&s->topics, &s->ntopics, w + 6, strlen(w + 6))) {
                e = "out of memory";
            }
        } else if (!strncmp(w, "label=", 6)) {
            e = add_label(s, w + 6, label_pattern, err, errlen);
        } else {
            snprintf(err, errlen, "'%.40s' is not token=, topic= or label=", w);
            e = err;
        }
    }
    free(copy);
    if (!e && !s->name)
        e = "is empty: NAME token=SECRET topic=FILTER... label=NAME=VALUE...";
    if (!e && (!s->token || !*s->token)) {
        snprintf(err, errlen, "department %s has no token=", s->name);
        e = err;
    }
    if (!e && s->ntopics == 0 && s->nlabels == 0) {
        snprintf(err, errlen, "department %s has no topic= nor label=: it would read the whole "
                              "city (use http.read_token for that)", s->name);
        e = err;
    }
    return e;
}

int api__scopes_parse(const struct cb_config *cfg, struct api_scope **out, size_t *nout,
                      char *err, size_t errlen)
{
    const struct cb_strlist *l = &cfg->http_departments;
    const char *lp = cfg->sensors_label_pattern ? cfg->sensors_label_pattern : "";
    struct api_scope *v = l->n ? calloc(l->n, sizeof *v) : NULL;
    char why[300];
    *out = NULL;
    *nout = 0;
    if (l->n && !v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < l->n; i++) {
        v[i].label_pattern = lp;
        const char *e = parse_line(&v[i], l->items[i], lp, why, sizeof why);
        for (size_t k = 0; !e && k < i; k++) {
            if (!strcmp(v[k].name, v[i].name))
                e = "names a department twice";
            else if (!strcmp(v[k].token, v[i].token))
                e = "has the token of another department";
        }
        if (!e && ((cfg->http_token && !strcmp(v[i].token, cfg->http_token)) ||
                   (cfg->http_read_token && !strcmp(v[i].token, cfg->http_read_token))))
            e = "has the token of http.token or http.read_token";
        if (e) {
            snprintf(err, errlen, "http.department '%.60s': %s", l->items[i], e);
            api__scopes_free(v, i + 1);
            return -1;
        }
    }
    *out = v;
    *nout = l->n;
    return 0;
}

int cb_api_check_departments(const struct cb_config *cfg, char *err, size_t errlen)
{
    struct api_scope *v;
    size_t n;
    if (api__scopes_parse(cfg, &v, &n, err, errlen))
        return -1;
    api__scopes_free(v, n);
    return 0;
}

/* ---- who is asking ---------------------------------------------------------------- */

/* The bearer token of the request: Authorization: Bearer, or (when
 * query_ok) an access_token= query parameter, which EventSource needs (it
 * cannot set headers). 0 with *tok and *len (len 0: none given), -1 when the
 * query parameter is not decodable. */
int api__bearer(h2o_req_t *req, int query_ok, const char **tok, size_t *len)
{
    *tok = NULL;
    *len = 0;
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i >= 0) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (v.len > 7 && h2o_lcstris(v.base, 7, H2O_STRLIT("bearer "))) {
            const char *t = v.base + 7;
            size_t n = v.len - 7;
            while (n && *t == ' ') {
                t++;
                n--;
            }
            *tok = t;
            *len = n;
        }
        return 0;
    }
    if (!query_ok || req->query_at == SIZE_MAX)
        return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - q) > 13 && !memcmp(q, "access_token=", 13)) {
            char *t = api__decode(&req->pool, q + 13, (size_t)(stop - q - 13), 1);
            if (!t)
                return -1;
            *tok = t;
            *len = strlen(t);
            return 0;
        }
        q = stop + 1;
    }
    return 0;
}

/* Sends the refusal and writes it to the audit log (through the provider). */
static void refuse(struct cb_api *api, h2o_req_t *req, int status, const char *who,
                   const char *msg)
{
    if (status == 401)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
                       H2O_STRLIT("Bearer realm=\"citybrain\""));
    if (api->prov.audit_refused) {
        size_t plen = req->query_at == SIZE_MAX ? req->path.len : req->query_at;
        char what[300];
        snprintf(what, sizeof what, "%.*s %.*s", (int)req->method.len, req->method.base,
                 (int)(plen < 256 ? plen : 256), req->path.base);
        api->prov.audit_refused(api->prov.ctx, who, what, status, msg);
    }
    api__error(api, req, status, msg);
}

int api__read_scope(struct cb_api *api, h2o_req_t *req, int departments_ok,
                    const struct api_scope **out)
{
    const struct cb_config *cfg = api->cfg;
    const char *tok;
    size_t len;
    *out = NULL;
    /* Only the event stream takes ?access_token= (EventSource sends no
     * headers); elsewhere it stays an unknown parameter. */
    size_t plen = req->query_at == SIZE_MAX ? req->path.len : req->query_at;
    int query_ok = h2o_memis(req->path.base, plen, H2O_STRLIT("/api/events"));
    if (api__bearer(req, query_ok, &tok, &len)) {
        refuse(api, req, 401, "unknown", "bad percent-encoding in access_token");
        return -1;
    }
    if (!len) {
        if (cfg->http_open_reads && api->nscopes == 0)
            return 0;
        refuse(api, req, 401, "anonymous",
               api->nscopes ? "reads need a token: departments are configured (http.department)"
                            : "reads need a token (http.open_reads is off)");
        return -1;
    }
    /* Every configured token is compared, whichever matches, so the time
     * taken does not say which kind of token was close. */
    int full = api__token_matches(tok, len, cfg->http_token);
    full |= api__token_matches(tok, len, cfg->http_read_token);
    const struct api_scope *dept = NULL;
    for (size_t i = 0; i < api->nscopes; i++)
        if (api__token_matches(tok, len, api->scopes[i].token))
            dept = &api->scopes[i];
    if (full)
        return 0;
    if (!dept) {
        refuse(api, req, 401, "unknown", "invalid token");
        return -1;
    }
    if (!departments_ok) {
        char msg[200];
        snprintf(msg, sizeof msg, "department %s may not read this: it reads sensors, series "
                                  "and alerts of its scope only", dept->name);
        refuse(api, req, 403, dept->name, msg);
        return -1;
    }
    *out = dept;
    return 0;
}

void api__scope_refuse(struct cb_api *api, h2o_req_t *req, const struct api_scope *s,
                       const char *msg)
{
    refuse(api, req, 403, s->name, msg);
}

int api__is_department(struct cb_api *api, const char *tok, size_t len, const char **name)
{
    for (size_t i = 0; i < api->nscopes; i++)
        if (api__token_matches(tok, len, api->scopes[i].token)) {
            *name = api->scopes[i].name;
            return 1;
        }
    return 0;
}
