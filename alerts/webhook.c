/* Webhook delivery: libcurl's multi interface driven by the libuv loop
 * (curl_multi_socket_action with a uv_poll per socket and one uv timer), so
 * the loop never blocks on the network, and a durable outbox in SQLite.
 *
 * Guarantees: a row is in the outbox table before its first attempt; it is
 * marked delivered after a 2xx answer and never sent again; failed attempts
 * are retried with exponential backoff (retry_min doubling to retry_max); on
 * start every undelivered row is resent. Rows of one (channel, alert id) are
 * delivered strictly in seq order: a later one waits while an earlier one is
 * in flight or failing. A crash between a 2xx and the commit of "delivered"
 * can resend that one row (at-least-once; receivers can dedupe on the
 * X-Citybrain-Seq header). */
#include "base/version.h"
#include "alerts/alerts_int.h"
#include "base/log.h"
#include "base/metrics.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INFLIGHT 16

struct item {
    struct item *next, *prev;
    int64_t seq, transition_seq, attempts, next_attempt;
    char *channel, *alert_id, *ctype, *body, *url;
    CURL *easy;
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
};

struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct alerts__webhook *w;
};

struct alerts__webhook {
    uv_loop_t *loop;
    struct alerts__webhook_opts o;
    CURLM *multi;
    uv_timer_t curl_timer;  /* curl's timeouts */
    uv_timer_t retry_timer; /* the next due retry */
    struct item *head, *tail;
    size_t n, inflight;
    int closing, open_handles;
    void (*done)(void *);
    void *done_ctx;
};

static int64_t now_ms(const struct alerts__webhook *w) { return cb_clock_now(w->o.clock); }

static void item_free(struct item *it)
{
    if (!it)
        return;
    free(it->channel);
    free(it->alert_id);
    free(it->ctype);
    free(it->body);
    free(it->url);
    curl_slist_free_all(it->headers);
    free(it);
}

static void unlink_item(struct alerts__webhook *w, struct item *it)
{
    if (it->prev)
        it->prev->next = it->next;
    else
        w->head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        w->tail = it->prev;
    w->n--;
}

static void pump(struct alerts__webhook *w);

/* ---- curl <-> uv ---- */

static void check_done(struct alerts__webhook *w)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(w->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct item *it = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode res = msg->data.result;
        long status = 0;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&it);
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(w->multi, easy);
        curl_easy_cleanup(easy);
        it->easy = NULL;
        w->inflight--;
        int64_t now = now_ms(w);
        it->attempts++;
        if (res == CURLE_OK && status >= 200 && status < 300) {
            cb_alert_store_outbox_attempt(w->o.store, it->seq, it->attempts, it->next_attempt, now,
                                          NULL);
            cb_counter_add(w->o.sent, 1);
            unlink_item(w, it);
            item_free(it);
            continue;
        }
        char why[CURL_ERROR_SIZE + 32];
        if (res != CURLE_OK)
            snprintf(why, sizeof why, "%s", *it->errbuf ? it->errbuf : curl_easy_strerror(res));
        else
            snprintf(why, sizeof why, "HTTP %ld", status);
        int64_t delay = w->o.retry_min_ms;
        for (int64_t i = 1; i < it->attempts && delay < w->o.retry_max_ms; i++)
            delay *= 2;
        if (delay > w->o.retry_max_ms)
            delay = w->o.retry_max_ms;
        it->next_attempt = now + delay;
        cb_alert_store_outbox_attempt(w->o.store, it->seq, it->attempts, it->next_attempt, 0, why);
        cb_counter_add(w->o.failed, 1);
        static struct cb_ratelimit rl = {.burst = 5, .interval_ms = 60000};
        cb_log_limited(&rl, CB_LOG_WARN, "alert",
                       "webhook %s: delivery %lld of %s failed (%s), attempt %lld, retry in %lld ms",
                       it->channel, (long long)it->seq, it->alert_id, why,
                       (long long)it->attempts, (long long)delay);
    }
    pump(w);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock *s = h->data;
    struct alerts__webhook *w = s->w;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running;
    curl_multi_socket_action(w->multi, s->fd, flags, &running);
    check_done(w);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct alerts__webhook *w = NULL;
    if (h->type == UV_POLL) {
        struct sock *s = h->data;
        w = s->w;
        free(s);
    } else {
        w = h->data;
    }
    if (--w->open_handles == 0 && w->closing) {
        void (*done)(void *) = w->done;
        void *ctx = w->done_ctx;
        free(w);
        if (done)
            done(ctx);
    }
}

/* CURLMOPT_SOCKETFUNCTION: curl says which socket to watch for what. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    struct alerts__webhook *w = userp;
    struct sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            if (!w->closing)
                curl_multi_assign(w->multi, fd, NULL);
            uv_close((uv_handle_t *)&s->poll, on_handle_closed);
        }
        return 0;
    }
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        s->fd = fd;
        s->w = w;
        if (uv_poll_init_socket(w->loop, &s->poll, fd)) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        w->open_handles++;
        curl_multi_assign(w->multi, fd, s);
    }
    int ev = 0;
    if (what & CURL_POLL_IN)
        ev |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&s->poll, ev, on_poll);
    return 0;
}

static void on_curl_timer(uv_timer_t *h)
{
    struct alerts__webhook *w = h->data;
    int running;
    curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(w);
}

/* CURLMOPT_TIMERFUNCTION: -1 stops the timer; 0 and more (re)start it. The
 * action runs from the uv timer, never from inside this callback. */
static int on_timeout(CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    struct alerts__webhook *w = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&w->curl_timer);
    else
        uv_timer_start(&w->curl_timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- scheduling ---- */

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

static int start(struct alerts__webhook *w, struct item *it)
{
    CURL *e = curl_easy_init();
    if (!e)
        return -1;
    curl_slist_free_all(it->headers);
    it->headers = NULL;
    char h[96];
    struct curl_slist *hs = NULL;
    snprintf(h, sizeof h, "Content-Type: %s", it->ctype);
    hs = curl_slist_append(hs, h);
    snprintf(h, sizeof h, "X-Citybrain-Seq: %lld", (long long)it->seq);
    if (hs)
        hs = curl_slist_append(hs, h);
    if (hs)
        hs = curl_slist_append(hs, "Expect:");
    if (!hs) {
        curl_easy_cleanup(e);
        return -1;
    }
    it->headers = hs;
    it->errbuf[0] = '\0';
    curl_easy_setopt(e, CURLOPT_URL, it->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, it->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(it->body));
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, it->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)w->o.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)w->o.timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, it);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, it->errbuf);
    char ua[96];
    snprintf(ua, sizeof ua, "citybrain/%s", cb_version);
    curl_easy_setopt(e, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* the answer body is not needed: discard it */
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        return -1;
    }
    it->easy = e;
    w->inflight++;
    return 0;
}

/* Whether an earlier item of the same (channel, alert) exists. */
static int blocked(const struct item *it)
{
    for (const struct item *p = it->prev; p; p = p->prev)
        if (!strcmp(p->channel, it->channel) && !strcmp(p->alert_id, it->alert_id))
            return 1;
    return 0;
}

static void on_retry_timer(uv_timer_t *h) { pump(h->data); }

/* Starts every due, unblocked item (up to MAX_INFLIGHT) and arms the retry
 * timer for the earliest item that is waiting for its time. */
static void pump(struct alerts__webhook *w)
{
    if (w->closing)
        return;
    int64_t now = now_ms(w), next = INT64_MAX;
    for (struct item *it = w->head; it && w->inflight < MAX_INFLIGHT; it = it->next) {
        if (it->easy || blocked(it))
            continue;
        if (it->next_attempt > now) {
            if (it->next_attempt < next)
                next = it->next_attempt;
            continue;
        }
        if (start(w, it)) {
            if (now + 1000 < next)
                next = now + 1000;
        }
    }
    if (next != INT64_MAX)
        uv_timer_start(&w->retry_timer, on_retry_timer, (uint64_t)(next - now), 0);
    else
        uv_timer_stop(&w->retry_timer);
}

static const char *url_of(const struct alerts__webhook *w, const char *channel)
{
    for (size_t i = 0; i < w->o.nchannels; i++)
        if (!strcmp(w->o.channels[i].name, channel) && w->o.channels[i].type == CB_CHANNEL_WEBHOOK)
            return w->o.channels[i].url;
    return NULL;
}

static int add(struct alerts__webhook *w, const struct cb_outbox_row *r)
{
    const char *url = url_of(w, r->channel);
    if (!url) {
        static struct cb_ratelimit rl = {.burst = 5, .interval_ms = 60000};
        cb_log_limited(&rl, CB_LOG_WARN, "alert",
                       "outbox %lld: channel '%s' is no longer a webhook; kept undelivered",
                       (long long)r->seq, r->channel);
        return 0;
    }
    struct item *it = calloc(1, sizeof *it);
    if (!it)
        return -1;
    it->seq = r->seq;
    it->transition_seq = r->transition_seq;
    it->attempts = r->attempts;
    it->next_attempt = r->next_attempt;
    it->channel = strdup(r->channel);
    it->alert_id = strdup(r->alert_id ? r->alert_id : "");
    it->ctype = strdup(r->content_type);
    it->body = strdup(r->body);
    it->url = strdup(url);
    if (!it->channel || !it->alert_id || !it->ctype || !it->body || !it->url) {
        item_free(it);
        return -1;
    }
    it->prev = w->tail;
    if (w->tail)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    w->n++;
    return 0;
}

int alerts__webhook_queue(struct alerts__webhook *w, const struct cb_outbox_row *row)
{
    if (add(w, row))
        return -1;
    pump(w);
    return 0;
}

size_t alerts__webhook_pending(struct alerts__webhook *w) { return w->n; }

static int resume_row(void *ctx, const struct cb_outbox_row *r)
{
    return add(ctx, r) ? 1 : 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* Every undelivered row of the outbox is loaded (in seq order) and is due at
 * once: after a restart the receiver gets them without waiting for backoff. */
struct alerts__webhook *alerts__webhook_new(uv_loop_t *loop, const struct alerts__webhook_opts *o,
                                            char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init);
    struct alerts__webhook *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->loop = loop;
    w->o = *o;
    struct cb_alert_reader *r = cb_alert_store_reader(o->store);
    if (cb_alert_reader_outbox(r, resume_row, w)) {
        snprintf(err, errlen, "reading the outbox: %s", cb_alert_reader_error(r));
        goto fail;
    }
    w->multi = curl_multi_init();
    if (!w->multi) {
        snprintf(err, errlen, "curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
    uv_timer_init(loop, &w->curl_timer);
    uv_timer_init(loop, &w->retry_timer);
    w->curl_timer.data = w;
    w->retry_timer.data = w;
    w->open_handles = 2;
    int64_t now = now_ms(w);
    for (struct item *it = w->head; it; it = it->next)
        it->next_attempt = now;
    if (w->n)
        cb_info("alert", "outbox: %zu undelivered webhook notifications to resend", w->n);
    pump(w);
    return w;
fail:
    for (struct item *it = w->head, *next; it; it = next) {
        next = it->next;
        item_free(it);
    }
    free(w);
    return NULL;
}

void alerts__webhook_close(struct alerts__webhook *w, void (*done)(void *ctx), void *ctx)
{
    w->closing = 1;
    w->done = done;
    w->done_ctx = ctx;
    for (struct item *it = w->head, *next; it; it = next) {
        next = it->next;
        if (it->easy) {
            curl_multi_remove_handle(w->multi, it->easy);
            curl_easy_cleanup(it->easy);
        }
        item_free(it);
    }
    w->head = w->tail = NULL;
    w->n = 0;
    curl_multi_cleanup(w->multi);
    w->multi = NULL;
    uv_timer_stop(&w->curl_timer);
    uv_timer_stop(&w->retry_timer);
    uv_close((uv_handle_t *)&w->curl_timer, on_handle_closed);
    uv_close((uv_handle_t *)&w->retry_timer, on_handle_closed);
}
