/* A minimal HTTP/1.1 server for the connections-per-second benchmark, so the real
 * server is not what limits new connections (a Python server would be).
 *
 *   httpd --port P [--duration S]
 *
 * One thread, epoll, non-blocking sockets.  Every request gets a short fixed
 * response with "Connection: close" and the server closes the connection (so the
 * server, not the client, holds TIME_WAIT).  Runs until SIGTERM or --duration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: text/plain\r\n"
    "Connection: close\r\n\r\nbench\n";

int main(int argc, char **argv) {
    int port = 80;
    double duration = 600;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls, 4096) < 0) {
        perror("httpd: bind/listen");
        return 2;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    fprintf(stderr, "httpd: listening on tcp %d\n", port);
    fflush(stderr);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long long served = 0;
    char buf[4096];
    struct epoll_event evs[256];
    while (!stop_flag) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9 > duration) break;
        int n = epoll_wait(ep, evs, 256, 200);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                for (;;) {
                    int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                    if (c < 0) break;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf - 1);
            if (r > 0) {
                buf[r] = 0;
                if (strstr(buf, "\r\n\r\n")) {  /* requests fit in one read here */
                    if (write(fd, RESPONSE, sizeof RESPONSE - 1) > 0) served++;
                } else {
                    continue;
                }
            } else if (r < 0 && errno == EAGAIN) {
                continue;
            }
            close(fd);  /* also removes it from the epoll set */
        }
    }
    printf("{\"served\": %lld}\n", served);
    return 0;
}
