/*
 * kfn-probe: a tiny static test program for real-node smoke tests, so that a
 * test image needs nothing but this one binary.
 *
 *   kfn-probe pause             sleep until SIGTERM/SIGINT (a pod sandbox)
 *   kfn-probe serve PORT        TCP server on 0.0.0.0:PORT, answers every
 *                               connection with "hello from <hostname>\n"
 *   kfn-probe get IP PORT       every second: connect, print what the server
 *                               sent (or the error), one line per attempt
 *   kfn-probe connect IP PORT   every second: print whether a TCP connect
 *                               succeeds (for TLS ports such as 10.96.0.1:443)
 *
 * When called as /pause (argv[0] basename "pause") it behaves as "pause".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static int do_pause(void) {
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  for (;;) pause();
  return 0;
}

static int do_serve(int port) {
  char host[256] = "?", msg[320];
  gethostname(host, sizeof host - 1);
  snprintf(msg, sizeof msg, "hello from %s\n", host);
  signal(SIGTERM, on_term);
  signal(SIGPIPE, SIG_IGN);
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) {
    perror("bind/listen");
    return 1;
  }
  printf("serving on :%d\n", port);
  fflush(stdout);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) continue;
    ssize_t n = write(c, msg, strlen(msg));
    (void)n;
    close(c);
  }
}

static int connect_to(const char *ip, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) return -EINVAL;
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct timeval tv = {.tv_sec = 2};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(s, (struct sockaddr *)&a, sizeof a)) {
    int e = errno;
    close(s);
    return -e;
  }
  return s;
}

static int do_client(const char *ip, int port, int read_reply) {
  signal(SIGTERM, on_term);
  for (;;) {
    time_t now = time(NULL);
    int s = connect_to(ip, port);
    if (s < 0) {
      printf("%ld %s:%d error %s\n", (long)now, ip, port, strerror(-s));
    } else if (read_reply) {
      char buf[512];
      ssize_t n = read(s, buf, sizeof buf - 1);
      buf[n > 0 ? n : 0] = 0;
      buf[strcspn(buf, "\n")] = 0;
      printf("%ld %s:%d reply %s\n", (long)now, ip, port, n > 0 ? buf : "(none)");
      close(s);
    } else {
      printf("%ld %s:%d connected\n", (long)now, ip, port);
      close(s);
    }
    fflush(stdout);
    sleep(1);
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *base = strrchr(argv[0], '/');
  base = base ? base + 1 : argv[0];
  if (strcmp(base, "pause") == 0) return do_pause();
  if (argc >= 2 && strcmp(argv[1], "pause") == 0) return do_pause();
  if (argc >= 3 && strcmp(argv[1], "serve") == 0) return do_serve(atoi(argv[2]));
  if (argc >= 4 && strcmp(argv[1], "get") == 0) return do_client(argv[2], atoi(argv[3]), 1);
  if (argc >= 4 && strcmp(argv[1], "connect") == 0) return do_client(argv[2], atoi(argv[3]), 0);
  fprintf(stderr, "usage: kfn-probe pause | serve PORT | get IP PORT | connect IP PORT\n");
  return 2;
}
