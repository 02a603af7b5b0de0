/* safetensors: reading (mmap, zero copy, every header byte checked before it is
 * trusted), sharded checkpoints, and writing through a temporary file. */
#ifndef PERQ_SAFETENSORS_H
#define PERQ_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "perq/dtype.h"
#include "perq/error.h"

#define PERQ_MAX_DIMS 8
/* Headers larger than this are refused before any allocation (the reference
 * implementation uses 100 MB). */
#define PERQ_ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)

typedef struct perq_tensor {
    char *name;
    perq_dtype dtype;
    int ndim;
    int64_t shape[PERQ_MAX_DIMS];
    const void *data;   /* into the mapping; valid while the file is open */
    size_t nbytes;
} perq_tensor;

typedef struct perq_st_meta {
    char *key;
    char *value;
} perq_st_meta;

typedef struct perq_st_file {
    char *path;               /* NULL when parsed from memory */
    void *map;                /* owned mapping, NULL when parsed from memory */
    size_t map_len;
    perq_tensor *tensors;     /* sorted by data offset */
    size_t n_tensors;
    perq_st_meta *meta;       /* __metadata__ */
    size_t n_meta;
} perq_st_file;

/* Parses a whole safetensors image held in memory (buf must outlive the result). */
int perq_st_parse(const uint8_t *buf, size_t len, perq_st_file *out, perq_err *err);
int perq_st_open(const char *path, perq_st_file *out, perq_err *err);
void perq_st_close(perq_st_file *f);
const perq_tensor *perq_st_find(const perq_st_file *f, const char *name);
size_t perq_tensor_numel(const perq_tensor *t);

/* A checkpoint folder: model.safetensors, or shards named by model.safetensors.index.json. */
typedef struct perq_checkpoint {
    perq_st_file *files;
    size_t n_files;
} perq_checkpoint;

int perq_ckpt_open(const char *dir, perq_checkpoint *out, perq_err *err);
void perq_ckpt_close(perq_checkpoint *c);
const perq_tensor *perq_ckpt_find(const perq_checkpoint *c, const char *name);

/* Writer: tensors are borrowed (the data must stay valid until perq_st_write
 * returns) and written in the order added. The header is padded with spaces
 * to a multiple of 8; the file appears under its name only once complete. */
typedef struct perq_st_writer perq_st_writer;

perq_st_writer *perq_st_writer_new(void);
void perq_st_writer_free(perq_st_writer *w);
int perq_st_writer_add(perq_st_writer *w, const char *name, perq_dtype dtype, int ndim,
                       const int64_t *shape, const void *data, perq_err *err);
int perq_st_writer_meta(perq_st_writer *w, const char *key, const char *value, perq_err *err);
/* Writes the whole file; every tensor must have been added with its data. */
int perq_st_write(perq_st_writer *w, const char *path, perq_err *err);

/* Streaming, for data too large to hold (made while it is written): declare
 * each tensor (its shape, no data), then perq_st_stream_begin writes the
 * header from the declared shapes to a temporary file; perq_st_stream_write
 * takes the tensors' bytes in the order declared, in chunks of any size, and
 * refuses more than they declare; perq_st_stream_finish checks that every
 * declared byte came and puts the file under its name. After a failed write
 * the temporary file is gone and the stream is closed; perq_st_writer_free
 * removes the file of a stream never finished. One thread at a time. */
int perq_st_writer_declare(perq_st_writer *w, const char *name, perq_dtype dtype, int ndim,
                           const int64_t *shape, perq_err *err);
int perq_st_stream_begin(perq_st_writer *w, const char *path, perq_err *err);
int perq_st_stream_write(perq_st_writer *w, const void *data, size_t len, perq_err *err);
int perq_st_stream_finish(perq_st_writer *w, perq_err *err);

#endif
