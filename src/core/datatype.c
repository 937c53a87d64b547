/* Names and sizes of datatypes and ops, as nccl-tests spells them. */
#include <string.h>

#include "reduce.h"

static const struct {
  const char *name;
  size_t size;
} datatypes[TALLY_NUM_DATATYPES] = {
    [TALLY_INT8] = {"int8", 1},     [TALLY_UINT8] = {"uint8", 1},         [TALLY_INT32] = {"int32", 4},
    [TALLY_UINT32] = {"uint32", 4}, [TALLY_INT64] = {"int64", 8},         [TALLY_UINT64] = {"uint64", 8},
    [TALLY_FLOAT16] = {"half", 2},  [TALLY_BFLOAT16] = {"bfloat16", 2},   [TALLY_FLOAT32] = {"float", 4},
    [TALLY_FLOAT64] = {"double", 8}};

static const char *const op_names[TALLY_NUM_OPS] = {"sum", "prod", "min", "max", "avg"};

const char *tally_datatype_name(tally_datatype_t t) {
  return (unsigned)t < TALLY_NUM_DATATYPES ? datatypes[t].name : NULL;
}

size_t tally_datatype_size(tally_datatype_t t) { return (unsigned)t < TALLY_NUM_DATATYPES ? datatypes[t].size : 0; }

const char *tally_op_name(tally_op_t op) { return (unsigned)op < TALLY_NUM_OPS ? op_names[op] : NULL; }

int tally_datatype_from_name(const char *name) {
  static const struct {
    const char *alias;
    tally_datatype_t type;
  } aliases[] = {{"fp16", TALLY_FLOAT16},    {"float16", TALLY_FLOAT16}, {"bf16", TALLY_BFLOAT16},
                 {"float32", TALLY_FLOAT32}, {"fp32", TALLY_FLOAT32},    {"float64", TALLY_FLOAT64},
                 {"fp64", TALLY_FLOAT64}};
  if (!name) return -1;
  for (int t = 0; t < TALLY_NUM_DATATYPES; t++)
    if (!strcmp(name, datatypes[t].name)) return t;
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (!strcmp(name, aliases[i].alias)) return (int)aliases[i].type;
  return -1;
}

int tally_op_from_name(const char *name) {
  if (!name) return -1;
  for (int op = 0; op < TALLY_NUM_OPS; op++)
    if (!strcmp(name, op_names[op])) return op;
  return -1;
}
