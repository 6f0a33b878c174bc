#include "core/version.h"

const char cb_version[] = CB_VERSION;
