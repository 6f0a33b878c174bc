/* The version string, from `git describe` at build time. Only base/version.c
 * sees the build's CB_VERSION, and it is rebuilt on every make, so every part
 * of the binary reports the same version. */
#ifndef CB_BASE_VERSION_H
#define CB_BASE_VERSION_H

extern const char cb_version[];

#endif
