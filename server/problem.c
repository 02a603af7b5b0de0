#include "problem.h"

#include <stdio.h>

const char *http_reason_phrase(unsigned status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Content";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    }
    return "Error";
}

json_t *problem_new(unsigned status, const char *slug, const char *detail)
{
    char type[128];
    snprintf(type, sizeof type, "urn:perq:problem:%s", slug);
    return json_pack("{ss ss si ss}", "type", type, "title", http_reason_phrase(status), "status", (int)status,
                     "detail", detail && detail[0] ? detail : http_reason_phrase(status));
}
