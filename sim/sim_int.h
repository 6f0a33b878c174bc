/* Shared between the simulator's files: the metric table. */
#ifndef CB_SIM_SIM_INT_H
#define CB_SIM_SIM_INT_H

/* One metric of a kind on a normal day (see model.c). */
struct sim__metric {
    const char *name;
    const char *unit;  /* SenML unit, or NULL when RFC 8428 registers none */
    double mean;
    double amp;        /* times the daily shape */
    int shape;
    double spread;     /* standard deviation of the per-sensor offset */
    double noise;      /* standard deviation of the per-reading noise */
    double lo;         /* readings are clamped at this floor */
    int decimals;
};

/* The description of metric m of kind, or NULL. */
const struct sim__metric *sim__metric_of(int kind, int m);
/* The index of the metric called name in kind, or -1. */
int sim__metric_index(int kind, const char *name);

#endif
