#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int fine_err_set(fine_err *e, const char *fmt, ...)
{
    if (e) {
        e->code = FINE_ERR_FAIL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void fine_err_prefix(fine_err *e, const char *prefix)
{
    if (!e || !prefix || !prefix[0])
        return;
    char tmp[FINE_ERR_MAX];
    size_t n = strlen(prefix);
    if (n > FINE_ERR_MAX / 2)
        n = FINE_ERR_MAX / 2;
    memcpy(tmp, prefix, n);
    tmp[n] = 0;
    strncat(tmp, ": ", sizeof tmp - strlen(tmp) - 1);
    strncat(tmp, e->msg, sizeof tmp - strlen(tmp) - 1);
    memcpy(e->msg, tmp, sizeof tmp);
}

int fine_err_names_file(const char *msg, const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (name && strcmp(name, "-") == 0)
        return strncmp(msg, "stdout: ", 8) == 0 || strncmp(msg, "stdin: ", 7) == 0;
    return n && strncmp(msg, name, n) == 0 && (msg[n] == ':' || msg[n] == '/');
}
