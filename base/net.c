/* TCP_NODELAY for Paho's sockets. Paho MQTT C 1.3 (MQTTAsync) never sets it
 * (checked with strace: no setsockopt at all), so small publishes may wait
 * for Nagle's algorithm. Paho does not expose its socket, so once connected we
 * find it: every connected TCP socket of this process gets the option. */
#include "base/net.h"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>

int cb_net_tcp_nodelay_all(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end || fd < 0 || fd == dirfd(d))
            continue;
        struct stat st;
        if (fstat((int)fd, &st) || !S_ISSOCK(st.st_mode))
            continue;
        int type = 0;
        socklen_t tl = sizeof type;
        if (getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_STREAM)
            continue;
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        if (getpeername((int)fd, (struct sockaddr *)&peer, &pl))
            continue;
        if (peer.ss_family != AF_INET && peer.ss_family != AF_INET6)
            continue;
        int one = 1;
        if (setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
            n++;
    }
    closedir(d);
    return n;
}
