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
 * X-Citybrain-Seq header).
 *
 * Scheduling costs what is due, not what is queued. Rows queue in one lane
 * per (channel, alert id), in seq order; only a lane's head can be sent. The
 * lanes whose head is not in flight sit in a min-heap ordered by the head's
 * due time (then seq), so a new row, a finished attempt or the retry timer
 * costs O(log lanes): pump pops what is due, up to MAX_INFLIGHT in flight,
 * and arms the timer for the heap's top. (The list scan this replaces
 * compared every queued row with every earlier one at each new row and each
 * failed retry: with the receiver down at 100 transitions/s, /api/health took
 * seconds, the loop being busy comparing.)
 *
 * A dead receiver costs one attempt per retry, not one per alert instance:
 * when an attempt cannot reach a channel (a transport error, or 502, 503,
 * 504) the channel is held. Its failed lane becomes the channel's probe and
 * is retried with its backoff; every other lane of the channel that comes due
 * is parked on the channel, out of the heap, with no attempt. The first
 * answer the channel gives that is not one of those releases it: the parked
 * lanes go back into the heap, due at once. */
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

struct lane;

struct item {
    struct item *next; /* the next row of its lane */
    struct lane *lane;
    int64_t seq, transition_seq, attempts, next_attempt;
    char *channel, *alert_id, *ctype, *body, *url;
    CURL *easy;
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
};

struct chan;

/* The rows of one (channel, alert id), oldest first. In the heap (at hidx)
 * while it has rows and its head is neither in flight nor parked. */
struct lane {
    struct item *head, *tail;
    struct chan *chan;
    struct lane *parked_next; /* on chan->parked while the channel is held */
    size_t hidx;
    int in_heap;
    char key[]; /* channel, LANE_SEP, alert id */
};

/* A webhook channel's hold (see the top): while `probe` is set, the channel
 * is held, and its other lanes wait on `parked`. */
struct chan {
    const char *name, *url; /* the configuration's */
    struct lane *probe;
    struct lane *parked;
    size_t nparked;
};

#define LANE_SEP '\x1f'
#define NOT_IN_HEAP SIZE_MAX

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
    uv_timer_t retry_timer; /* the heap's top, when it is not due yet */
    struct alerts__map lanes; /* key -> struct lane */
    struct lane **heap;       /* min-heap by (head's next_attempt, head's seq) */
    size_t nheap, capheap;
    struct chan *chans;       /* the webhook channels of the configuration */
    size_t nchans;
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

/* ---- the lanes' heap ---- */

static int due_before(const struct lane *a, const struct lane *b)
{
    const struct item *x = a->head, *y = b->head;
    return x->next_attempt != y->next_attempt ? x->next_attempt < y->next_attempt
                                              : x->seq < y->seq;
}

static void heap_set(struct alerts__webhook *w, size_t i, struct lane *l)
{
    w->heap[i] = l;
    l->hidx = i;
}

static void sift_up(struct alerts__webhook *w, size_t i)
{
    struct lane *l = w->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!due_before(l, w->heap[parent]))
            break;
        heap_set(w, i, w->heap[parent]);
        i = parent;
    }
    heap_set(w, i, l);
}

static void sift_down(struct alerts__webhook *w, size_t i)
{
    struct lane *l = w->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->nheap)
            break;
        if (c + 1 < w->nheap && due_before(w->heap[c + 1], w->heap[c]))
            c++;
        if (!due_before(w->heap[c], l))
            break;
        heap_set(w, i, w->heap[c]);
        i = c;
    }
    heap_set(w, i, l);
}

/* Puts a lane whose head waits for its time into the heap. 0, or -1 on OOM
 * (the lane then waits until the next lane of the heap is taken: see pump). */
static int heap_push(struct alerts__webhook *w, struct lane *l)
{
    if (w->nheap == w->capheap) {
        size_t cap = w->capheap ? w->capheap * 2 : 64;
        struct lane **h = realloc(w->heap, cap * sizeof *h);
        if (!h)
            return -1;
        w->heap = h;
        w->capheap = cap;
    }
    l->in_heap = 1;
    heap_set(w, w->nheap++, l);
    sift_up(w, l->hidx);
    return 0;
}

/* Takes the heap's top out. */
static struct lane *heap_pop(struct alerts__webhook *w)
{
    struct lane *top = w->heap[0];
    top->in_heap = 0;
    top->hidx = NOT_IN_HEAP;
    if (--w->nheap > 0) {
        heap_set(w, 0, w->heap[w->nheap]);
        sift_down(w, 0);
    }
    return top;
}

static void lane_key(char *buf, size_t len, const char *channel, const char *alert_id)
{
    snprintf(buf, len, "%s%c%s", channel, LANE_SEP, alert_id);
}

/* Removes a finished head from its lane: the lane goes back into the heap
 * for its next row, or is freed when it has none. */
static void lane_advance(struct alerts__webhook *w, struct lane *l)
{
    struct item *it = l->head;
    l->head = it->next;
    if (!l->head)
        l->tail = NULL;
    w->n--;
    if (l->head) {
        if (heap_push(w, l))
            cb_error("alert", "webhook: out of memory scheduling %s", l->key);
        return;
    }
    alerts__map_del(&w->lanes, l->key);
    free(l);
}

static void pump(struct alerts__webhook *w);

/* Parks a lane on its held channel: out of the heap, no attempt. */
static void park(struct lane *l)
{
    struct chan *c = l->chan;
    l->parked_next = c->parked;
    c->parked = l;
    c->nparked++;
}

/* The channel answered: no longer held; every parked lane goes back into
 * the heap, due at `now` (their rows waited for the channel, not for their
 * own backoff). */
static void release(struct alerts__webhook *w, struct chan *c, int64_t now)
{
    if (c->nparked)
        cb_info("alert", "webhook %s answers again: %zu waiting notification(s) go out", c->name,
                c->nparked);
    c->probe = NULL;
    while (c->parked) {
        struct lane *l = c->parked;
        c->parked = l->parked_next;
        l->parked_next = NULL;
        if (l->head->next_attempt > now)
            l->head->next_attempt = now;
        if (heap_push(w, l))
            cb_error("alert", "webhook: out of memory scheduling %s", l->key);
    }
    c->nparked = 0;
}

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
        struct lane *lane = it->lane;
        int unreachable = res != CURLE_OK || status == 502 || status == 503 || status == 504;
        if (!unreachable && lane->chan->probe)
            release(w, lane->chan, now);
        if (res == CURLE_OK && status >= 200 && status < 300) {
            cb_alert_store_outbox_attempt(w->o.store, it->seq, it->attempts, it->next_attempt, now,
                                          NULL);
            cb_counter_add(w->o.sent, 1);
            lane_advance(w, lane);
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
        if (unreachable && !lane->chan->probe)
            lane->chan->probe = lane; /* held: this lane probes, the others wait */
        if (unreachable && lane->chan->probe != lane)
            park(lane); /* it was in flight when the channel failed */
        else if (heap_push(w, lane))
            cb_error("alert", "webhook: out of memory scheduling %s", lane->key);
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
        free(w->chans);
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

static void on_retry_timer(uv_timer_t *h) { pump(h->data); }

/* Starts the heads that are due, earliest first, while fewer than
 * MAX_INFLIGHT are in flight, and arms the retry timer for the heap's top
 * when it is not due yet (a finished transfer pumps again: with the heap's
 * top due and every slot busy no timer is needed). A due lane of a held
 * channel is parked instead (its probe goes); a head curl cannot take is
 * tried again a second later. Costs O(log lanes) per lane taken. */
static void pump(struct alerts__webhook *w)
{
    if (w->closing)
        return;
    int64_t now = now_ms(w);
    while (w->nheap && w->inflight < MAX_INFLIGHT && w->heap[0]->head->next_attempt <= now) {
        struct lane *l = heap_pop(w);
        if (l->chan->probe && l->chan->probe != l) {
            park(l);
            continue;
        }
        if (start(w, l->head)) {
            l->head->next_attempt = now + 1000;
            if (heap_push(w, l))
                cb_error("alert", "webhook: out of memory scheduling %s", l->key);
            break;
        }
    }
    if (w->nheap && w->heap[0]->head->next_attempt > now)
        uv_timer_start(&w->retry_timer, on_retry_timer,
                       (uint64_t)(w->heap[0]->head->next_attempt - now), 0);
    else
        uv_timer_stop(&w->retry_timer);
}

/* The webhook channel of that name, or NULL. */
static struct chan *chan_of(const struct alerts__webhook *w, const char *channel)
{
    for (size_t i = 0; i < w->nchans; i++)
        if (!strcmp(w->chans[i].name, channel))
            return &w->chans[i];
    return NULL;
}

static int add(struct alerts__webhook *w, const struct cb_outbox_row *r)
{
    struct chan *chan = chan_of(w, r->channel);
    if (!chan) {
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
    it->url = strdup(chan->url);
    if (!it->channel || !it->alert_id || !it->ctype || !it->body || !it->url) {
        item_free(it);
        return -1;
    }
    size_t klen = strlen(it->channel) + strlen(it->alert_id) + 2;
    char *key = malloc(klen);
    if (!key) {
        item_free(it);
        return -1;
    }
    lane_key(key, klen, it->channel, it->alert_id);
    struct lane *l = alerts__map_get(&w->lanes, key);
    if (l) {
        free(key);
        l->tail->next = it;
        l->tail = it;
        it->lane = l;
        w->n++;
        return 0; /* behind the lane's head: nothing to schedule */
    }
    l = calloc(1, sizeof *l + klen);
    if (!l || alerts__map_put(&w->lanes, key, l)) {
        free(l);
        free(key);
        item_free(it);
        return -1;
    }
    memcpy(l->key, key, klen);
    free(key);
    l->chan = chan;
    l->head = l->tail = it;
    l->hidx = NOT_IN_HEAP;
    it->lane = l;
    w->n++;
    if (heap_push(w, l)) {
        alerts__map_del(&w->lanes, l->key);
        free(l);
        w->n--;
        item_free(it);
        return -1;
    }
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

int alerts__webhook_busy(const struct alerts__webhook *w, const char *channel,
                         const char *alert_id)
{
    size_t len = strlen(channel) + strlen(alert_id) + 2;
    char *key = malloc(len);
    if (!key)
        return 1; /* cannot tell: do not add to it */
    lane_key(key, len, channel, alert_id);
    const struct lane *l = alerts__map_get(&w->lanes, key);
    free(key);
    return l && l->head;
}

static int resume_row(void *ctx, const struct cb_outbox_row *r)
{
    return add(ctx, r) ? 1 : 0;
}

/* Frees a lane and its rows, aborting a transfer in flight (map sweep). */
static int drop_lane(void *ctx, void *value)
{
    struct alerts__webhook *w = ctx;
    struct lane *l = value;
    for (struct item *it = l->head, *next; it; it = next) {
        next = it->next;
        if (it->easy) {
            curl_multi_remove_handle(w->multi, it->easy);
            curl_easy_cleanup(it->easy);
        }
        item_free(it);
    }
    free(l);
    return 1;
}

/* Frees every lane and row, and the heap. */
static void free_lanes(struct alerts__webhook *w)
{
    alerts__map_sweep(&w->lanes, drop_lane, w);
    alerts__map_clear(&w->lanes, NULL);
    free(w->heap);
    w->heap = NULL;
    w->nheap = w->capheap = 0;
    w->n = 0;
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
    w->chans = calloc(o->nchannels ? o->nchannels : 1, sizeof *w->chans);
    if (!w->chans) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < o->nchannels; i++)
        if (o->channels[i].type == CB_CHANNEL_WEBHOOK ||
            o->channels[i].type == CB_CHANNEL_ALERTMANAGER)
            w->chans[w->nchans++] = (struct chan){.name = o->channels[i].name,
                                                  .url = o->channels[i].url};
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
    /* every head is due now (the heap's order stays: equal times, seq order) */
    int64_t now = now_ms(w);
    for (size_t i = 0; i < w->nheap; i++)
        w->heap[i]->head->next_attempt = now;
    if (w->n)
        cb_info("alert", "outbox: %zu undelivered webhook notifications to resend", w->n);
    pump(w);
    return w;
fail:
    free_lanes(w);
    free(w->chans);
    free(w);
    return NULL;
}

void alerts__webhook_close(struct alerts__webhook *w, void (*done)(void *ctx), void *ctx)
{
    w->closing = 1;
    w->done = done;
    w->done_ctx = ctx;
    free_lanes(w);
    curl_multi_cleanup(w->multi);
    w->multi = NULL;
    uv_timer_stop(&w->curl_timer);
    uv_timer_stop(&w->retry_timer);
    uv_close((uv_handle_t *)&w->curl_timer, on_handle_closed);
    uv_close((uv_handle_t *)&w->retry_timer, on_handle_closed);
}
