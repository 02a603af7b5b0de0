/* /v1/models: a model is a set of files uploaded one by one into
 * DATA/models/ID/, then committed (validated) once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_util.h"
#include "perq/fsutil.h"
#include "perq/model_check.h"
#include "problem.h"
#include "routes.h"

static json_t *model_json(const store_model *m)
{
    json_t *files = json_array();
    for (size_t i = 0; i < m->n_files; i++)
        json_array_append_new(files, json_pack("{ss sI ss}", "name", m->files[i].name, "bytes",
                                               (json_int_t)m->files[i].bytes, "sha256", m->files[i].sha256));
    return json_pack("{ss ss ss ss so}", "id", m->id, "name", m->name, "status", m->status, "created_at",
                     m->created_at, "files", files);
}

/* Loads the model of the path's :id, or replies 404 / 500 and returns false. */
static bool load_model(http_req *r, store_model *m)
{
    perqd *d = http_app(r);
    perq_err err = {0};
    switch (store_model_get(d->store, http_param(r, 0), m, &err)) {
    case STORE_OK: return true;
    case STORE_NOT_FOUND:
        http_reply_problem(r, 404, "model-not-found", "no model with id \"%s\"", http_param(r, 0));
        return false;
    default: routes_internal_error(r, &err); return false;
    }
}

static void reply_model(http_req *r, unsigned status)
{
    store_model m;
    if (!load_model(r, &m))
        return;
    http_reply_json(r, status, model_json(&m));
    store_model_free(&m);
}

void models_create(http_req *r)
{
    perqd *d = http_app(r);
    json_t *doc = routes_json_object(r);
    if (!doc)
        return;
    static const char *const allowed[] = {"name", NULL};
    json_t *name = json_object_get(doc, "name");
    if (!routes_only_keys(r, doc, allowed)) {
        json_decref(doc);
        return;
    }
    if (!json_is_string(name) || json_string_length(name) == 0 || json_string_length(name) > PERQ_NAME_MAX ||
        strlen(json_string_value(name)) != json_string_length(name)) {
        http_reply_problem(r, 400, "invalid-field", "\"name\" must be a string of 1 to %d characters",
                           PERQ_NAME_MAX);
        json_decref(doc);
        return;
    }
    char id[PERQD_ID_MAX], dir[PATH_MAX];
    perq_err err = {0};
    if (perqd_new_id("m_", id) != 0 || perqd_path(d, dir, sizeof dir, "models/%s", id) != 0 ||
        perq_mkdirs(dir, &err) != 0 || store_model_create(d->store, id, json_string_value(name), &err) != 0) {
        routes_internal_error(r, &err);
        json_decref(doc);
        return;
    }
    json_decref(doc);
    store_model m;
    if (store_model_get(d->store, id, &m, &err) != STORE_OK) {
        routes_internal_error(r, &err);
        return;
    }
    http_reply_json(r, 201, model_json(&m));
    store_model_free(&m);
    char location[64];
    snprintf(location, sizeof location, "/v1/models/%s", id);
    http_reply_header(r, "Location", location);
}

void models_list(http_req *r)
{
    perqd *d = http_app(r);
    store_model *models;
    size_t n;
    perq_err err = {0};
    if (store_model_list(d->store, &models, &n, &err) != 0) {
        routes_internal_error(r, &err);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, model_json(&models[i]));
    store_models_free(models, n);
    http_reply_json(r, 200, json_pack("{so}", "models", list));
}

void models_get(http_req *r)
{
    reply_model(r, 200);
}

void models_delete(http_req *r)
{
    perqd *d = http_app(r);
    const char *id = http_param(r, 0);
    perq_err err = {0};
    switch (store_model_begin_delete(d->store, id, &err)) {
    case STORE_OK: break;
    case STORE_NOT_FOUND: http_reply_problem(r, 404, "model-not-found", "no model with id \"%s\"", id); return;
    case STORE_CONFLICT:
        http_reply_problem(r, 409, "model-in-use",
                           "model %s is used by a queued or running job, or is being validated; cancel the job "
                           "or wait for it to end",
                           id);
        return;
    default: routes_internal_error(r, &err); return;
    }
    char dir[PATH_MAX];
    if (perqd_path(d, dir, sizeof dir, "models/%s", id) != 0 || perq_remove_tree(dir, &err) != 0 ||
        store_model_delete_row(d->store, id, &err) != 0) {
        routes_internal_error(r, &err); /* the model stays "deleting"; a restart finishes the job */
        return;
    }
    http_reply_empty(r, 204);
}

void models_commit(http_req *r)
{
    perqd *d = http_app(r);
    const char *id = http_param(r, 0);
    perq_err err = {0};
    store_model m;
    switch (store_model_transition(d->store, id, "uploading", "validating", &err)) {
    case STORE_OK: break;
    case STORE_NOT_FOUND: http_reply_problem(r, 404, "model-not-found", "no model with id \"%s\"", id); return;
    case STORE_CONFLICT:
        if (!load_model(r, &m))
            return;
        if (strcmp(m.status, "ready") == 0)
            http_reply_json(r, 200, model_json(&m)); /* committed already: nothing to do */
        else
            http_reply_problem(r, 409, "model-busy", "model %s is %s", id, m.status);
        store_model_free(&m);
        return;
    default: routes_internal_error(r, &err); return;
    }

    char dir[PATH_MAX];
    perq_problems problems = {0};
    size_t n = 0;
    if (perqd_path(d, dir, sizeof dir, "models/%s", id) != 0)
        perq_problems_add(&problems, "the model's folder name is too long"), n = 1;
    else
        n = perq_model_check(dir, &problems);
    if (store_model_transition(d->store, id, "validating", n == 0 ? "ready" : "uploading", &err) != STORE_OK) {
        perq_problems_free(&problems);
        routes_internal_error(r, &err);
        return;
    }
    if (n == 0) {
        perq_problems_free(&problems);
        reply_model(r, 200);
        return;
    }
    char detail[2048];
    snprintf(detail, sizeof detail, "model %s failed validation with %zu problem%s: %s%s; upload fixed files and "
             "commit again", id, n, n == 1 ? "" : "s", problems.n ? problems.items[0] : "?", n > 1 ? "; ..." : "");
    json_t *problem = problem_new(422, "model-invalid", detail);
    json_t *list = json_array();
    for (size_t i = 0; i < problems.n; i++)
        json_array_append_new(list, json_string(problems.items[i]));
    json_object_set_new(problem, "problems", list);
    perq_problems_free(&problems);
    http_reply_problem_json(r, problem);
}

void models_file_begin(http_req *r)
{
    perqd *d = http_app(r);
    const char *id = http_param(r, 0), *name = http_param(r, 1);
    if (!http_name_valid(name)) {
        http_reply_problem(r, 400, "invalid-name",
                           "file names are 1 to %d characters of A-Z a-z 0-9 . _ - and do not start with a dot",
                           PERQ_NAME_MAX);
        return;
    }
    char sum[65];
    if (routes_checksum_header(r, sum) < 0)
        return;
    store_model m;
    if (!load_model(r, &m))
        return;
    bool uploading = strcmp(m.status, "uploading") == 0;
    if (!uploading)
        http_reply_problem(r, 409, "model-not-uploading",
                           "model %s is %s; files can be added only before it is committed", id, m.status);
    store_model_free(&m);
    if (!uploading)
        return;
    char path[PATH_MAX];
    perq_err err = {0};
    if (perqd_path(d, path, sizeof path, "models/%s/%s", id, name) != 0 ||
        upload_open(http_upload(r), path, &err) != 0)
        routes_internal_error(r, &err);
}

void models_file_put(http_req *r)
{
    perqd *d = http_app(r);
    const char *id = http_param(r, 0), *name = http_param(r, 1);
    upload *u = http_upload(r);
    if (!routes_finish_upload(r, name))
        return;
    store_file f = {.bytes = (int64_t)u->bytes};
    snprintf(f.name, sizeof f.name, "%s", name);
    memcpy(f.sha256, u->sha256, sizeof f.sha256);
    perq_err err = {0};
    switch (store_model_put_file(d->store, id, &f, upload_commit, u, &err)) {
    case STORE_OK:
        http_reply_json(r, 201, json_pack("{ss sI ss}", "name", f.name, "bytes", (json_int_t)f.bytes, "sha256",
                                          f.sha256));
        return;
    case STORE_NOT_FOUND: http_reply_problem(r, 404, "model-not-found", "no model with id \"%s\"", id); return;
    case STORE_CONFLICT:
        http_reply_problem(r, 409, "model-not-uploading",
                           "model %s was committed or deleted during the upload; nothing was stored", id);
        return;
    default: routes_internal_error(r, &err); return;
    }
}
