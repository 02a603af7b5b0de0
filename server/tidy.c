#include "tidy.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "perq/fsutil.h"

static bool model_has_file(const store_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_files; i++)
        if (strcmp(m->files[i].name, name) == 0)
            return true;
    return false;
}

static const store_model *find_model(const store_model *models, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(models[i].id, id) == 0)
            return &models[i];
    return NULL;
}

/* Removes each entry of dir for which keep() says no. */
static int sweep(const char *dir, bool (*keep)(const char *name, const void *ctx), const void *ctx,
                 perq_err *err)
{
    DIR *dh = opendir(dir);
    if (!dh)
        return 0; /* nothing there yet */
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(dh))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || keep(e->d_name, ctx))
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue;
        fprintf(stderr, "perqd: removing %s (not in the store: left by an interrupted upload)\n", path);
        rc = perq_remove_tree(path, err);
    }
    closedir(dh);
    return rc;
}

static bool keep_model_file(const char *name, const void *ctx)
{
    return model_has_file(ctx, name);
}

struct models_ctx {
    const store_model *models;
    size_t n;
};

static bool keep_model_dir(const char *name, const void *ctx)
{
    const struct models_ctx *m = ctx;
    return find_model(m->models, m->n, name) != NULL;
}

struct datasets_ctx {
    const store_dataset *all;
    size_t n;
};

static bool keep_dataset(const char *name, const void *ctx)
{
    const struct datasets_ctx *d = ctx;
    for (size_t i = 0; i < d->n; i++)
        if (strcmp(d->all[i].name, name) == 0)
            return true;
    return false;
}

int perqd_tidy(perqd *d, perq_err *err)
{
    store_model *models;
    size_t n;
    if (store_model_list(d->store, &models, &n, err) != 0)
        return -1;
    char dir[PATH_MAX];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (perqd_path(d, dir, sizeof dir, "models/%s", models[i].id) != 0)
            continue;
        if (strcmp(models[i].status, "deleting") == 0) {
            fprintf(stderr, "perqd: finishing the deletion of model %s\n", models[i].id);
            rc = perq_remove_tree(dir, err);
            if (rc == 0)
                rc = store_model_delete_row(d->store, models[i].id, err);
        } else {
            rc = sweep(dir, keep_model_file, &models[i], err);
        }
    }
    struct models_ctx mctx = {models, n};
    if (rc == 0 && perqd_path(d, dir, sizeof dir, "models") == 0)
        rc = sweep(dir, keep_model_dir, &mctx, err);
    store_models_free(models, n);

    store_dataset *all;
    if (rc == 0 && store_dataset_list(d->store, &all, &n, err) == 0) {
        struct datasets_ctx dctx = {all, n};
        if (perqd_path(d, dir, sizeof dir, "datasets") == 0)
            rc = sweep(dir, keep_dataset, &dctx, err);
        free(all);
    }
    return rc;
}
