/* perqd's request-header parsers on arbitrary bytes: Range against a file
 * size taken from the input, If-None-Match, and route matching with percent
 * decoding. Each result must keep its promises (a partial range lies inside
 * the file and is not empty; a captured name either decodes or is "%"). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t file_size = 0;
    memcpy(&file_size, data, 8);
    /* Small sizes are where the edge cases are; keep most inputs there. */
    if (file_size & 1)
        file_size >>= 40;
    char *text = malloc(size - 8 + 1);
    if (!text)
        return 0;
    memcpy(text, data + 8, size - 8);
    text[size - 8] = '\0';

    uint64_t first = 0, length = 0;
    http_range_result r = http_parse_range(text, file_size, &first, &length);
    if (r == HTTP_RANGE_PARTIAL && (length == 0 || first >= file_size || length > file_size - first))
        abort();

    http_etag_matches(text, "\"0123456789abcdef\"");

    if (text[0] == '/') {
        char *params[4];
        int n = http_path_match("/v1/models/:id/files/:name", text, params, 4);
        for (int i = 0; i < n; i++) {
            if (strchr(params[i], '/') && http_name_valid(params[i]))
                abort();
            free(params[i]);
        }
    }
    free(text);
    return 0;
}
