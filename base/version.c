#include "base/version.h"

const char cb_version[] = CB_VERSION;
