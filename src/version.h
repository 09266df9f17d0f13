/* SPDX-License-Identifier: MIT */
/* version.h - the one place the version lives. */
#ifndef TN_VERSION_H
#define TN_VERSION_H
#define TN_VERSION "0.1.0"
#endif
