/* Body sink for benches/load.sh's small-POST workload: an HTTP/1.1 upstream on 127.0.0.1:PORT
 * that reads and discards each request's whole body (Content-Length or chunked) and only then
 * answers 200 with the number of body bytes it received, followed by " auth" if the request
 * carried an Authorization header (which a proxy in front should have stripped). Otherwise
 * like benches/sink.py, but in one epoll event loop on one thread, so that tens of
 * thousands of small POSTs a second cost it little CPU (sink.py, one Python thread per
 * connection, tops out near 20k requests/s here and would be the bottleneck). Keep-alive and
 * pipelining; `Connection: close` closes after the answer; `Expect: 100-continue` gets a 100.
 * Build: cc -O2 -o sink benches/sink.c        Usage: sink PORT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (64 * 1024)
#define OUT 4096

enum state { HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER };

struct conn {
  int fd;
  enum state st;
  size_t start, end;      /* unread bytes are in[start..end) */
  unsigned long long left; /* body or chunk bytes still to skip */
  unsigned long long got;  /* body bytes of this request so far */
  int close_after;
  int auth;                /* this request carried an Authorization header */
  size_t out_len, out_off; /* answers not yet written (the client is slow to read) */
  char out[OUT];
  char in[BUF];
};

static int ep;

static void drop(struct conn *c) {
  close(c->fd);
  free(c);
}

/* A header line's value if its name is `name` (case-insensitive), else NULL. */
static const char *header(const char *line, size_t len, const char *name) {
  size_t n = strlen(name);
  if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':') return NULL;
  const char *v = line + n + 1;
  while (v < line + len && (*v == ' ' || *v == '\t')) v++;
  return v;
}

static int contains_ci(const char *s, size_t len, const char *word) {
  size_t n = strlen(word);
  for (size_t i = 0; i + n <= len; i++)
    if (strncasecmp(s + i, word, n) == 0) return 1;
  return 0;
}

/* Appends to the output queue; 0 if it does not fit (the connection is then dropped). */
static int queue(struct conn *c, const char *s, size_t n) {
  if (c->out_len + n > OUT) return 0;
  memcpy(c->out + c->out_len, s, n);
  c->out_len += n;
  return 1;
}

static int answer(struct conn *c) {
  char body[32], msg[128];
  int b = snprintf(body, sizeof body, "%llu%s\n", c->got, c->auth ? " auth" : "");
  int m = snprintf(msg, sizeof msg,
                   "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s",
                   b, c->close_after ? "Connection: close\r\n" : "", body);
  c->got = 0;
  c->st = HEAD;
  return queue(c, msg, (size_t)m);
}

/* Parses what is buffered; returns 0 on a protocol error. */
static int parse(struct conn *c) {
  for (;;) {
    char *p = c->in + c->start;
    size_t avail = c->end - c->start;
    if (c->st == BODY || c->st == CHUNK_DATA) {
      size_t k = avail < c->left ? avail : (size_t)c->left;
      c->start += k;
      c->left -= k;
      c->got += k;
      if (c->left) return 1;
      if (c->st == BODY) {
        if (!answer(c)) return 0;
      } else {
        c->st = CHUNK_END;
      }
      continue;
    }
    if (c->st == HEAD) {
      char *e = memmem(p, avail, "\r\n\r\n", 4);
      if (!e) return avail < BUF / 2; /* a head must fit in half the buffer */
      size_t head_len = (size_t)(e - p) + 4;
      int chunked = 0, expect = 0;
      unsigned long long cl = 0;
      c->close_after = c->auth = 0;
      char *line = memchr(p, '\n', head_len); /* skip the request line */
      while (line && line + 1 < e) {
        char *s = line + 1;
        char *nl = memchr(s, '\n', (size_t)(e + 2 - s));
        size_t len = (size_t)(nl - s);
        if (len && s[len - 1] == '\r') len--;
        const char *v;
        if ((v = header(s, len, "content-length"))) cl = strtoull(v, NULL, 10);
        else if ((v = header(s, len, "transfer-encoding"))) chunked = contains_ci(v, len - (size_t)(v - s), "chunked");
        else if ((v = header(s, len, "connection"))) c->close_after = contains_ci(v, len - (size_t)(v - s), "close");
        else if ((v = header(s, len, "expect"))) expect = contains_ci(v, len - (size_t)(v - s), "100-continue");
        else if (header(s, len, "authorization")) c->auth = 1;
        line = nl;
      }
      c->start += head_len;
      c->got = 0;
      if (expect && !queue(c, "HTTP/1.1 100 Continue\r\n\r\n", 25)) return 0;
      if (chunked) {
        c->st = CHUNK_SIZE;
      } else if (cl) {
        c->st = BODY;
        c->left = cl;
      } else if (!answer(c)) {
        return 0;
      }
      continue;
    }
    /* CHUNK_SIZE, CHUNK_END, TRAILER: one line at a time */
    char *nl = memchr(p, '\n', avail);
    if (!nl) return avail < 1024;
    size_t len = (size_t)(nl - p);
    c->start += len + 1;
    if (len && p[len - 1] == '\r') len--;
    if (c->st == CHUNK_SIZE) {
      char *end;
      c->left = strtoull(p, &end, 16);
      if (end == p) return 0;
      c->st = c->left ? CHUNK_DATA : TRAILER;
    } else if (c->st == CHUNK_END) {
      if (len) return 0;
      c->st = CHUNK_SIZE;
    } else if (!len) { /* TRAILER: the empty line ends the request */
      if (!answer(c)) return 0;
    }
  }
}

/* Writes what is queued; returns 0 if the connection is to be dropped. */
static int flush(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
      epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
      return 1;
    }
    if (n <= 0) return 0;
    c->out_off += (size_t)n;
  }
  if (c->out_len) {
    c->out_len = c->out_off = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    if (c->close_after && c->st == HEAD) return 0;
  }
  return 1;
}

static int readable(struct conn *c) {
  for (;;) {
    if (c->start == c->end) {
      c->start = c->end = 0;
    } else if (c->end == BUF) {
      memmove(c->in, c->in + c->start, c->end - c->start);
      c->end -= c->start;
      c->start = 0;
    }
    ssize_t n = read(c->fd, c->in + c->end, BUF - c->end);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 1;
    if (n <= 0) return 0;
    c->end += (size_t)n;
    if (!parse(c)) return 0;
    if (c->out_len && !flush(c)) return 0;
    if (c->out_len) return 1; /* the client is not reading: wait for EPOLLOUT */
    if ((size_t)n < BUF / 2) return 1; /* drained, most likely */
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PORT\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) {
    perror("sink: bind/listen");
    return 1;
  }
  ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (!c) {
        int fd;
        while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct conn *nc = calloc(1, sizeof *nc);
          if (!nc) {
            close(fd);
            continue;
          }
          nc->fd = fd;
          struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
        }
        continue;
      }
      int ok = 1;
      if (evs[i].events & EPOLLOUT) ok = flush(c);
      if (ok && !c->out_len && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) ok = readable(c);
      if (!ok) drop(c);
    }
  }
}
