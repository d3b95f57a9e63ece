/* record_print.h: msgpack values as JSON text, for fine-info and error messages. */
#ifndef FINE_RECORD_PRINT_H
#define FINE_RECORD_PRINT_H

#include <stdio.h>

#include <msgpack.h>

/* Writes o as JSON. Binary values are not dumped: they print as {"bytes": N}. Strings are
 * escaped; non-finite floats print as null (JSON has no NaN). */
void fine_obj_print_json(FILE *f, const msgpack_object *o);

#endif
