/* An HTTP receiver on loopback for webhook tests: a thread with a blocking
 * accept loop that reads one request per connection (headers, then
 * Content-Length bytes), records it, and answers 200 with Connection: close.
 * It can be down (init only: the port is reserved but nothing listens, so
 * connections are refused) and come up later on the same port.
 *
 * Every request is kept in arrival order, with its X-Citybrain-Seq header
 * (-1 when absent). Test thread only, except the recording (under mu). */
#ifndef CB_TESTS_SUPPORT_RECEIVER_H
#define CB_TESTS_SUPPORT_RECEIVER_H

#include <pthread.h>
#include <stddef.h>

struct cb_h_receiver {
    int port, fd;
    pthread_t thread;
    pthread_mutex_t mu;
    int n;             /* requests received */
    size_t cap;
    long long *seq;    /* per request: X-Citybrain-Seq, or -1 */
    char **body;       /* per request: the body, NUL-terminated */
    char **head;       /* per request: the request line and headers */
    int stop, running;
};

/* Picks a free loopback port; nothing listens yet. */
void cb_h_receiver_init(struct cb_h_receiver *r);
/* Starts listening on r->port. Returns 0 or -1. */
int cb_h_receiver_start(struct cb_h_receiver *r);
/* Stops listening (joins the thread); it may be started again. */
void cb_h_receiver_stop(struct cb_h_receiver *r);
/* Requests received so far. */
int cb_h_receiver_count(struct cb_h_receiver *r);
/* Stops it if running and frees what it recorded. */
void cb_h_receiver_free(struct cb_h_receiver *r);

#endif
