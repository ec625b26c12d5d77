/* Target for bench/attach.py.
 *
 *   attach_target threads SHMFILE [NTHREADS DEPTH [CPU]]
 *       NTHREADS (default 50) threads parked DEPTH (default 20) frames deep,
 *       plus one "spinner" thread (pinned to CPU if given) that reads
 *       CLOCK_MONOTONIC in a tight loop and keeps, in the shared file, the
 *       longest gap between two consecutive readings across which it was
 *       stopped: how long it was held stopped (see voluntary_switches()).
 *       The bench resets the maximum before each tool run by bumping
 *       reset_seq and waits for the spinner to echo it in ack_seq.
 *   attach_target recurse N
 *       the main thread parked N frames deep.
 *
 * Prints "ready" once everything is parked (and the spinner is spinning). */
#define _GNU_SOURCE
#include <sched.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct shared {              /* layout mirrored in attach.py */
    volatile uint64_t reset_seq;   /* written by the bench */
    volatile uint64_t ack_seq;     /* written by the spinner */
    volatile uint64_t max_gap_ns;  /* longest gap across a stop since the last reset */
    volatile uint64_t loops;       /* readings taken, to tell it is alive */
    volatile uint64_t max_other_ns;/* longest gap without a stop (preemption, a
                                      stolen vcpu): the noise floor */
};

static struct shared *shm;
static volatile long sink;
static volatile int never; /* keeps park() returnable for the compiler */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int parked;
static int ready_in_park; /* recurse mode: say "ready" from the bottom */

static void park(void)
{
    if (ready_in_park) {
        printf("ready\n");
        fflush(stdout);
    }
    pthread_mutex_lock(&mu);
    parked++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    while (!never)
        pause();
}

__attribute__((noipa)) void level(int n)
{
    if (n <= 1)
        park();
    else
        level(n - 1);
    sink += n;
}

static void *parked_thread(void *arg)
{
    level((int)(long)arg);
    return NULL;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* How the spinner tells a stop from noise: it never blocks, so a voluntary
 * context switch (ru_nvcsw) can only be the kernel parking it in a ptrace or
 * group stop. A gap across such a switch is a stop; any other gap
 * (preemption: an involuntary switch; the hypervisor stealing the vcpu: no
 * switch at all) is noise, kept apart as max_other_ns. */
static uint64_t voluntary_switches(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return (uint64_t)ru.ru_nvcsw;
}

static void *spinner(void *arg)
{
    int cpu = (int)(long)arg;
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
            fprintf(stderr, "spinner: cannot pin to cpu %d\n", cpu);
    }
    uint64_t prev = now_ns(), nv_prev = voluntary_switches();
    uint64_t max = 0, other = 0, seen = shm->reset_seq;
    int switched_last = 0;
    shm->ack_seq = seen;
    for (;;) {
        uint64_t t = now_ns();
        uint64_t nv = voluntary_switches();
        uint64_t gap = t - prev;
        prev = t;
        /* a switch seen now happened in this gap or, if it fell between the
         * two readings, shows in the next one: charge both to the stop */
        int switched = nv != nv_prev;
        nv_prev = nv;
        uint64_t seq = shm->reset_seq;
        if (seq != seen) {
            seen = seq;
            max = other = 0;
            shm->max_gap_ns = 0;
            shm->max_other_ns = 0;
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            shm->ack_seq = seq;
        } else if (switched || switched_last) {
            if (gap > max)
                shm->max_gap_ns = max = gap;
        } else if (gap > other) {
            shm->max_other_ns = other = gap;
        }
        switched_last = switched;
        shm->loops++;
    }
    return NULL;
}

static int run_threads(const char *path, int nthreads, int depth, int cpu)
{
    int fd = open(path, O_RDWR);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    shm = mmap(NULL, sizeof *shm, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (shm == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, parked_thread, (void *)(long)depth) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    pthread_mutex_lock(&mu);
    while (parked < nthreads)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);

    pthread_t s;
    if (pthread_create(&s, NULL, spinner, (void *)(long)cpu) != 0) {
        perror("pthread_create");
        return 1;
    }
    pthread_setname_np(s, "spinner");
    while (shm->loops == 0)
        usleep(1000);
    printf("ready\n");
    fflush(stdout);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "threads") == 0)
        return run_threads(argv[2], argc > 3 ? atoi(argv[3]) : 50, argc > 4 ? atoi(argv[4]) : 20,
                           argc > 5 ? atoi(argv[5]) : -1);
    if (argc >= 3 && strcmp(argv[1], "recurse") == 0) {
        ready_in_park = 1;
        level(atoi(argv[2]));
        return 0;
    }
    fprintf(stderr, "usage: %s threads SHMFILE [N DEPTH [CPU]] | recurse N\n", argv[0]);
    return 2;
}
