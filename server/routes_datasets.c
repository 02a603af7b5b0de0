/* /v1/datasets: calibration and evaluation text, one file per name in
 * DATA/datasets/. Uploading a name again replaces the file (a job already
 * running keeps reading the one it opened). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_util.h"
#include "perq/fsutil.h"
#include "routes.h"

static json_t *dataset_json(const store_dataset *ds)
{
    return json_pack("{ss sI ss ss}", "name", ds->name, "bytes", (json_int_t)ds->bytes, "sha256", ds->sha256,
                     "created_at", ds->created_at);
}

void datasets_begin(http_req *r)
{
    perqd *d = http_app(r);
    const char *name = http_param(r, 0);
    if (!http_name_valid(name)) {
        http_reply_problem(r, 400, "invalid-name",
                           "dataset names are 1 to %d characters of A-Z a-z 0-9 . _ - and do not start with a dot",
                           PERQ_NAME_MAX);
        return;
    }
    char sum[65];
    if (routes_checksum_header(r, sum) < 0)
        return;
    char dir[PATH_MAX], path[PATH_MAX];
    perq_err err = {0};
    if (perqd_path(d, dir, sizeof dir, "datasets") != 0 || perq_mkdirs(dir, &err) != 0 ||
        perqd_path(d, path, sizeof path, "datasets/%s", name) != 0 || upload_open(http_upload(r), path, &err) != 0)
        routes_internal_error(r, &err);
}

void datasets_put(http_req *r)
{
    perqd *d = http_app(r);
    upload *u = http_upload(r);
    if (!routes_finish_upload(r, http_param(r, 0)))
        return;
    store_dataset ds = {.bytes = (int64_t)u->bytes};
    snprintf(ds.name, sizeof ds.name, "%s", http_param(r, 0));
    memcpy(ds.sha256, u->sha256, sizeof ds.sha256);
    perq_err err = {0};
    if (store_dataset_put(d->store, &ds, upload_commit, u, &err) != 0 ||
        store_dataset_get(d->store, ds.name, &ds, &err) != STORE_OK) {
        routes_internal_error(r, &err);
        return;
    }
    http_reply_json(r, 201, dataset_json(&ds));
    char location[sizeof ds.name + 16];
    snprintf(location, sizeof location, "/v1/datasets/%s", ds.name);
    http_reply_header(r, "Location", location);
}

void datasets_list(http_req *r)
{
    perqd *d = http_app(r);
    store_dataset *all;
    size_t n;
    perq_err err = {0};
    if (store_dataset_list(d->store, &all, &n, &err) != 0) {
        routes_internal_error(r, &err);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, dataset_json(&all[i]));
    free(all);
    http_reply_json(r, 200, json_pack("{so}", "datasets", list));
}

void datasets_get(http_req *r)
{
    perqd *d = http_app(r);
    store_dataset ds;
    perq_err err = {0};
    switch (store_dataset_get(d->store, http_param(r, 0), &ds, &err)) {
    case STORE_OK: http_reply_json(r, 200, dataset_json(&ds)); return;
    case STORE_NOT_FOUND:
        http_reply_problem(r, 404, "dataset-not-found", "no dataset named \"%s\"", http_param(r, 0));
        return;
    default: routes_internal_error(r, &err); return;
    }
}
