/* Job specs from untrusted bytes: the parser never crashes, and whatever it
 * accepts normalises to a form that parses back to the same spec. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perq/jobspec.h"

static void check_round_trip(const perq_jobspec *s)
{
    json_t *j = perq_jobspec_to_json(s);
    perq_jobspec back;
    perq_err err;
    if (!j || perq_jobspec_parse(j, s->model[0] != 0, &back, &err) != 0 || memcmp(&back, s, sizeof back) != 0)
        abort();
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!doc)
        return 0;
    for (int require_model = 0; require_model <= 1; require_model++) {
        perq_jobspec s;
        perq_err err;
        if (perq_jobspec_parse(doc, require_model, &s, &err) == 0)
            check_round_trip(&s);
        else if (err.code != PERQ_E_INVALID || !memchr(err.msg, ':', sizeof err.msg))
            abort(); /* every rejection is "field.path: reason" */
    }
    json_decref(doc);
    return 0;
}
