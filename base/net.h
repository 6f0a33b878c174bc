/* Small socket helpers. */
#ifndef CB_BASE_NET_H
#define CB_BASE_NET_H

/* Sets TCP_NODELAY on every connected TCP socket of this process and returns
 * how many. Paho MQTT C 1.3 never sets it and does not expose its socket, so
 * after a connect we set it on all of them: small publishes (alerts, sensor
 * messages) then leave at once instead of waiting for Nagle's algorithm and
 * the peer's delayed ACK (tens of milliseconds). */
int cb_net_tcp_nodelay_all(void);

#endif
