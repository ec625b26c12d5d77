/* Benchmark target: N threads (argv[1], default 50), each parked under
 * D frames (argv[2], default 20) of recurse(), with an inlined helper in
 * every frame so symbolization has inline chains to find. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

volatile long sink;
static int depth = 20, parked;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static inline __attribute__((always_inline)) void account(int n)
{
    sink += n;
}

__attribute__((noinline)) void recurse(int n)
{
    account(n);
    if (n > 1) {
        recurse(n - 1);
    } else {
        pthread_mutex_lock(&mu);
        parked++;
        pthread_mutex_unlock(&mu);
        for (;;)
            pause();
    }
    sink -= n;
}

static void *thread_main(void *arg)
{
    (void)arg;
    recurse(depth);
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 50;
    depth = argc > 2 ? atoi(argv[2]) : 20;
    for (int i = 1; i < n; i++) {
        pthread_t t;
        pthread_create(&t, NULL, thread_main, NULL);
    }
    while (1) {
        pthread_mutex_lock(&mu);
        int done = parked == n - 1;
        pthread_mutex_unlock(&mu);
        if (done)
            break;
        usleep(1000);
    }
    puts("ready");
    fflush(stdout);
    thread_main(NULL);
}
