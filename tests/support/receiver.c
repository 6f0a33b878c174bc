/* The webhook tests' HTTP receiver; see receiver.h. */
#include "tests/support/receiver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Records one request (under r->mu). */
static void record(struct cb_h_receiver *r, long long seq, char *head, char *body)
{
    pthread_mutex_lock(&r->mu);
    if ((size_t)r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        long long *s = realloc(r->seq, cap * sizeof *s);
        char **b = s ? realloc(r->body, cap * sizeof *b) : NULL;
        char **h = b ? realloc(r->head, cap * sizeof *h) : NULL;
        if (s)
            r->seq = s;
        if (b)
            r->body = b;
        if (!h) {
            pthread_mutex_unlock(&r->mu);
            fprintf(stderr, "receiver: out of memory\n");
            abort();
        }
        r->head = h;
        r->cap = cap;
    }
    r->seq[r->n] = seq;
    r->head[r->n] = head;
    r->body[r->n] = body;
    r->n++;
    pthread_mutex_unlock(&r->mu);
}

/* Reads one request (headers, then Content-Length bytes), records it,
 * answers 200. */
static void serve_one(struct cb_h_receiver *r, int c)
{
    char buf[65536];
    size_t len = 0;
    char *end = NULL;
    while (len < sizeof buf - 1 && !end) {
        ssize_t k = read(c, buf + len, sizeof buf - 1 - len);
        if (k <= 0)
            return;
        len += (size_t)k;
        buf[len] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (!end)
        return;
    const char *cl = strcasestr(buf, "Content-Length:");
    const char *sq = strcasestr(buf, "X-Citybrain-Seq:");
    size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
    size_t have = len - (size_t)(end + 4 - buf);
    while (have < want && len < sizeof buf - 1) {
        ssize_t k = read(c, buf + len, sizeof buf - 1 - len);
        if (k <= 0)
            return;
        len += (size_t)k;
        have += (size_t)k;
    }
    buf[len] = '\0';
    record(r, sq ? atoll(sq + 16) : -1, strndup(buf, (size_t)(end - buf)),
           strndup(end + 4, want));
    const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    if (write(c, ok, sizeof ok - 1) < 0) {
    }
}

static void *receiver_main(void *arg)
{
    struct cb_h_receiver *r = arg;
    for (;;) {
        int c = accept(r->fd, NULL, NULL);
        if (c < 0)
            break;
        pthread_mutex_lock(&r->mu);
        int stop = r->stop;
        pthread_mutex_unlock(&r->mu);
        if (!stop)
            serve_one(r, c);
        close(c);
        if (stop)
            break;
    }
    return NULL;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 128)) {
        close(fd);
        return -1;
    }
    return fd;
}

void cb_h_receiver_init(struct cb_h_receiver *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->fd = -1;
    int fd = listen_on(0);
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    r->port = ntohs(a.sin_port);
}

int cb_h_receiver_start(struct cb_h_receiver *r)
{
    r->fd = listen_on(r->port);
    if (r->fd < 0)
        return -1;
    r->stop = 0;
    if (pthread_create(&r->thread, NULL, receiver_main, r) != 0) {
        close(r->fd);
        r->fd = -1;
        return -1;
    }
    r->running = 1;
    return 0;
}

void cb_h_receiver_stop(struct cb_h_receiver *r)
{
    if (!r->running)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = 1;
    pthread_mutex_unlock(&r->mu);
    int c = socket(AF_INET, SOCK_STREAM, 0); /* wake accept() */
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c, (struct sockaddr *)&a, sizeof a)) {
    }
    close(c);
    pthread_join(r->thread, NULL);
    close(r->fd);
    r->fd = -1;
    r->running = 0;
}

int cb_h_receiver_count(struct cb_h_receiver *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void cb_h_receiver_free(struct cb_h_receiver *r)
{
    cb_h_receiver_stop(r);
    for (int i = 0; i < r->n; i++) {
        free(r->body[i]);
        free(r->head[i]);
    }
    free(r->seq);
    free(r->body);
    free(r->head);
    pthread_mutex_destroy(&r->mu);
    memset(r, 0, sizeof *r);
}
