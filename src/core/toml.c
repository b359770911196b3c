/* TOML 1.0 reader: a hand-written recursive-descent parser over a byte buffer.
 *
 * Owns: sgm_toml_parse (bytes -> tree), sgm_toml_free, lookups, and sgm_toml_dump, the canonical
 * text form the corpus tests and the fuzz target compare (format: tests/data/toml/README.md).
 * Depends on libc only (no PETSc, MPI or other project header) and has no global mutable state, so
 * it is fuzzed on its own (docs/fuzzing.md).
 *
 * Trade-offs:
 * - The whole document is checked for UTF-8 validity and bare CRs in one pass before parsing, so
 *   the grammar works on bytes and strings are copied byte-wise. The price: an encoding error is
 *   reported even when a syntax error comes earlier in the document.
 * - Columns count bytes from the start of the line (1-based), not code points: cheap, exact for
 *   ASCII configuration files, and what editors that show byte offsets display.
 * - Each node is a public SgmTomlValue followed by private bookkeeping (how a table was defined,
 *   depth, capacity, a hash index of keys), so the public struct stays plain. Tables index their
 *   keys with an open-addressing hash from 8 keys on: duplicate checks stay linear-time overall
 *   for documents with 100k keys, while small tables use a linear scan.
 * - Nesting (tables, arrays, inline tables, dotted-key parts) is limited to SGM_TOML_MAX_DEPTH
 *   levels, which bounds the recursion of the parser, sgm_toml_free and sgm_toml_dump.
 * - Date-times are validated (field ranges, leap years) but kept as their text.
 * - Newlines inside multi-line strings are normalised to LF. A UTF-8 BOM at the start is skipped.
 * - Floats that overflow to infinity (1e400) are rejected rather than silently becoming inf.
 * - Float text goes through strtod: the locale's decimal point is substituted for '.', so a
 *   program that called setlocale still parses "1.5" correctly.
 */
#include "sgm/toml.h"

#include <inttypes.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  F_EXPLICIT = 1u, /* table defined by its own [header] (or [[header]] element) */
  F_IMPLICIT = 2u, /* table created as an intermediate of a [header] */
  F_DOTTED = 4u,   /* table created by a dotted key */
  F_FROZEN = 8u,   /* inline table or a table inside one: closed for extension */
  F_AOT = 16u      /* array created by [[header]]: may be appended to */
};

enum { HASH_FROM = 8 }; /* tables with at least this many keys get a hash index */

typedef struct Node {
  SgmTomlValue v; /* first member: a Node * is a valid SgmTomlValue * */
  unsigned flags;
  int depth;    /* root table 0 */
  size_t cap;   /* ARRAY and TABLE: allocated slots */
  size_t *klen; /* TABLE: byte length of each key (quoted keys may contain NUL) */
  size_t *hash; /* TABLE: slot + 1 per bucket, 0 for empty; NULL below HASH_FROM keys */
  size_t hcap;  /* power of two */
} Node;

typedef struct {
  char *d;
  size_t n, cap;
} Buf;

typedef struct {
  int line, col;
} Pos;

typedef struct {
  char *s;
  size_t n;
  Pos at;
} KeyPart;

typedef struct {
  KeyPart *p;
  size_t n, cap;
} Key;

typedef struct {
  const char *s;
  size_t len, pos;
  int line;
  size_t bol; /* offset of the first byte of the current line */
  char *err;
  size_t errlen;
  int failed;
  Node *root, *cur;
  Buf tmp; /* scratch for strings and numbers */
} Parser;

static const char *const type_names[] = {"string",   "integer", "float", "boolean",
                                         "datetime", "array",   "table"};

const char *sgm_toml_type_name(SgmTomlType t)
{
  if ((unsigned)t < sizeof type_names / sizeof type_names[0]) return type_names[t];
  return "unknown";
}

static int buf_put(Buf *b, const char *s, size_t n)
{
  if (n > SIZE_MAX / 2 - b->n - 1) return -1;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1) cap *= 2;
    char *d = realloc(b->d, cap);
    if (!d) return -1;
    b->d = d;
    b->cap = cap;
  }
  if (n) memcpy(b->d + b->n, s, n);
  b->n += n;
  b->d[b->n] = '\0';
  return 0;
}

static int buf_putc(Buf *b, char c)
{
  return buf_put(b, &c, 1);
}

static int buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(Buf *b, const char *fmt, ...)
{
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (k < 0 || (size_t)k >= sizeof tmp) return -1;
  return buf_put(b, tmp, (size_t)k);
}

static char *memdup0(const char *s, size_t n)
{
  char *d = malloc(n + 1);
  if (!d) return NULL;
  if (n) memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

static int peek(const Parser *P)
{
  return P->pos < P->len ? (unsigned char)P->s[P->pos] : -1;
}

static int peek_at(const Parser *P, size_t k)
{
  return P->pos + k < P->len ? (unsigned char)P->s[P->pos + k] : -1;
}

static Pos pos_of(int line, size_t col0)
{
  Pos p = {line, col0 >= INT_MAX ? INT_MAX : (int)col0 + 1};
  return p;
}

static Pos here(const Parser *P)
{
  return pos_of(P->line, P->pos - P->bol);
}

/* A bare CR was rejected up front, so '\r' here always starts CRLF. */
static int at_eol(const Parser *P)
{
  int c = peek(P);
  return c == '\n' || c == '\r';
}

static void eat_eol(Parser *P)
{
  if (peek(P) == '\r') P->pos++;
  P->pos++;
  if (P->line < INT_MAX) P->line++;
  P->bol = P->pos;
}

static int fail_at(Parser *P, Pos at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_at(Parser *P, Pos at, const char *fmt, ...)
{
  if (P->failed) return -1;
  P->failed = 1;
  if (!P->errlen) return -1;
  int k = snprintf(P->err, P->errlen, "%d:%d: ", at.line, at.col);
  if (k >= 0 && (size_t)k < P->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->err + k, P->errlen - (size_t)k, fmt, ap);
    va_end(ap);
  }
  return -1;
}

static int oom(Parser *P)
{
  return fail_at(P, here(P), "out of memory");
}

/* Length of the (already validated) UTF-8 sequence starting with byte c. */
static size_t utf8_len(unsigned c)
{
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Readable form of the character at byte offset `at`, for messages. */
static const char *char_repr(const Parser *P, size_t at, char *tmp, size_t n)
{
  if (at >= P->len) return "end of file";
  unsigned c = (unsigned char)P->s[at];
  if (c == '\n' || c == '\r') return "end of line";
  if (c >= 0x20 && c < 0x7f) {
    snprintf(tmp, n, "'%c'", (char)c);
  } else if (c < 0x80) {
    snprintf(tmp, n, "control character U+%04X", c);
  } else {
    size_t k = utf8_len(c);
    if (at + k > P->len) k = P->len - at;
    snprintf(tmp, n, "'%.*s'", (int)k, P->s + at);
  }
  return tmp;
}

static const char *describe(const Parser *P, char *tmp, size_t n)
{
  return char_repr(P, P->pos, tmp, n);
}

/* The whole document must be UTF-8 without surrogates or overlong forms, and every CR must start
 * a CRLF pair (TOML 1.0: "A TOML file must be a valid UTF-8 encoded Unicode document"). */
static int check_encoding(Parser *P)
{
  const unsigned char *s = (const unsigned char *)P->s;
  size_t i = 0, n = P->len, bol = 0;
  int line = 1;
  while (i < n) {
    unsigned c = s[i];
    if (c < 0x80) {
      if (c == '\n') {
        if (line < INT_MAX) line++;
        bol = i + 1;
      } else if (c == '\r' && (i + 1 >= n || s[i + 1] != '\n')) {
        return fail_at(P, pos_of(line, i - bol),
                       "bare carriage return (CR must be followed by LF)");
      }
      i++;
      continue;
    }
    Pos at = pos_of(line, i - bol);
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else if (c <= 0xBF) {
      return fail_at(P, at, "invalid UTF-8: unexpected continuation byte 0x%02X", c);
    } else if (c <= 0xC1) {
      return fail_at(P, at, "invalid UTF-8: overlong encoding (lead byte 0x%02X)", c);
    } else {
      return fail_at(P, at, "invalid UTF-8: byte 0x%02X (code point above U+10FFFF)", c);
    }
    for (size_t k = 1; k <= need; k++) {
      if (i + k >= n || (s[i + k] & 0xC0) != 0x80)
        return fail_at(P, at, "invalid UTF-8: truncated sequence (lead byte 0x%02X)", c);
    }
    unsigned b = s[i + 1];
    if (b < lo) return fail_at(P, at, "invalid UTF-8: overlong encoding");
    if (b > hi) {
      if (c == 0xED) return fail_at(P, at, "invalid UTF-8: encoded UTF-16 surrogate");
      return fail_at(P, at, "invalid UTF-8: code point above U+10FFFF");
    }
    i += need + 1;
  }
  return 0;
}

static Node *node_alloc(Parser *P, SgmTomlType t, int depth, Pos at)
{
  if ((t == SGM_TOML_ARRAY || t == SGM_TOML_TABLE) && depth > SGM_TOML_MAX_DEPTH) {
    fail_at(P, at, "nesting too deep (more than %d levels of tables and arrays)",
            SGM_TOML_MAX_DEPTH);
    return NULL;
  }
  Node *n = calloc(1, sizeof *n);
  if (!n) {
    oom(P);
    return NULL;
  }
  n->v.type = t;
  n->v.line = at.line;
  n->v.col = at.col;
  n->depth = depth;
  return n;
}

static void node_free(Node *n)
{
  if (!n) return;
  switch (n->v.type) {
  case SGM_TOML_STRING:
  case SGM_TOML_DATETIME:
    free(n->v.u.s.str);
    break;
  case SGM_TOML_ARRAY:
    for (size_t i = 0; i < n->v.u.arr.n; i++) node_free((Node *)n->v.u.arr.items[i]);
    free(n->v.u.arr.items);
    break;
  case SGM_TOML_TABLE:
    for (size_t i = 0; i < n->v.u.tab.n; i++) {
      free(n->v.u.tab.keys[i]);
      node_free((Node *)n->v.u.tab.vals[i]);
    }
    free(n->v.u.tab.keys);
    free(n->v.u.tab.vals);
    free(n->v.u.tab.key_line);
    free(n->klen);
    free(n->hash);
    break;
  default:
    break;
  }
  free(n);
}

void sgm_toml_free(SgmTomlValue *v)
{
  node_free((Node *)v);
}

static size_t hash_key(const char *k, size_t n)
{
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
  return (size_t)(h ^ (h >> 29));
}

static int tab_reindex(Node *t, size_t want)
{
  size_t hcap = 16;
  while (hcap < 2 * want) hcap *= 2;
  size_t *h = calloc(hcap, sizeof *h);
  if (!h) return -1;
  for (size_t i = 0; i < t->v.u.tab.n; i++) {
    size_t b = hash_key(t->v.u.tab.keys[i], t->klen[i]) & (hcap - 1);
    while (h[b]) b = (b + 1) & (hcap - 1);
    h[b] = i + 1;
  }
  free(t->hash);
  t->hash = h;
  t->hcap = hcap;
  return 0;
}

/* Slot of key k in table t, or SIZE_MAX. */
static size_t tab_find(const Node *t, const char *k, size_t kl)
{
  const SgmTomlValue *v = &t->v;
  if (t->hash) {
    size_t b = hash_key(k, kl) & (t->hcap - 1);
    while (t->hash[b]) {
      size_t i = t->hash[b] - 1;
      if (t->klen[i] == kl && memcmp(v->u.tab.keys[i], k, kl) == 0) return i;
      b = (b + 1) & (t->hcap - 1);
    }
    return SIZE_MAX;
  }
  for (size_t i = 0; i < v->u.tab.n; i++)
    if (t->klen[i] == kl && memcmp(v->u.tab.keys[i], k, kl) == 0) return i;
  return SIZE_MAX;
}

/* Appends key k -> val to table t; takes ownership of val (freed on failure). */
static int tab_add(Parser *P, Node *t, const char *k, size_t kl, Node *val, int line)
{
  SgmTomlValue *v = &t->v;
  size_t n = v->u.tab.n;
  if (n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 4;
    char **keys = realloc(v->u.tab.keys, cap * sizeof *keys);
    if (keys) v->u.tab.keys = keys;
    SgmTomlValue **vals = realloc(v->u.tab.vals, cap * sizeof *vals);
    if (vals) v->u.tab.vals = vals;
    int *kline = realloc(v->u.tab.key_line, cap * sizeof *kline);
    if (kline) v->u.tab.key_line = kline;
    size_t *klen = realloc(t->klen, cap * sizeof *klen);
    if (klen) t->klen = klen;
    if (!keys || !vals || !kline || !klen) goto nomem;
    t->cap = cap;
  }
  char *key = memdup0(k, kl);
  if (!key) goto nomem;
  v->u.tab.keys[n] = key;
  v->u.tab.vals[n] = &val->v;
  v->u.tab.key_line[n] = line;
  t->klen[n] = kl;
  v->u.tab.n = n + 1;
  if (n + 1 >= HASH_FROM) {
    if (!t->hash || 2 * (n + 1) > t->hcap) {
      if (tab_reindex(t, n + 1)) return oom(P); /* val is owned by t already */
    } else {
      size_t b = hash_key(k, kl) & (t->hcap - 1);
      while (t->hash[b]) b = (b + 1) & (t->hcap - 1);
      t->hash[b] = n + 1;
    }
  }
  return 0;
nomem:
  node_free(val);
  return oom(P);
}

static int arr_add(Parser *P, Node *a, Node *val)
{
  SgmTomlValue *v = &a->v;
  if (v->u.arr.n == a->cap) {
    size_t cap = a->cap ? 2 * a->cap : 4;
    SgmTomlValue **items = realloc(v->u.arr.items, cap * sizeof *items);
    if (!items) {
      node_free(val);
      return oom(P);
    }
    v->u.arr.items = items;
    a->cap = cap;
  }
  v->u.arr.items[v->u.arr.n++] = &val->v;
  return 0;
}

const SgmTomlValue *sgm_toml_get(const SgmTomlValue *table, const char *key)
{
  if (!table || !key || table->type != SGM_TOML_TABLE) return NULL;
  const Node *t = (const Node *)table;
  size_t i = tab_find(t, key, strlen(key));
  return i == SIZE_MAX ? NULL : table->u.tab.vals[i];
}

static int is_bare(int c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
}

static int is_digit(int c)
{
  return c >= '0' && c <= '9';
}

static int is_hex(int c)
{
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_oct(int c)
{
  return c >= '0' && c <= '7';
}

static int is_bin(int c)
{
  return c == '0' || c == '1';
}

static int hex_val(int c)
{
  return is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
}

static void skip_ws(Parser *P)
{
  while (P->pos < P->len && (P->s[P->pos] == ' ' || P->s[P->pos] == '\t')) P->pos++;
}

/* At '#': consumes the comment up to (not including) the newline. */
static int skip_comment(Parser *P)
{
  P->pos++;
  while (P->pos < P->len) {
    unsigned c = (unsigned char)P->s[P->pos];
    if (c == '\n' || c == '\r') break;
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return fail_at(P, here(P), "control character U+%04X in comment", c);
    P->pos++;
  }
  return 0;
}

/* Whitespace, newlines and comments, as allowed between array elements. */
static int skip_blank(Parser *P)
{
  for (;;) {
    skip_ws(P);
    if (peek(P) == '#') {
      if (skip_comment(P)) return -1;
    } else if (at_eol(P)) {
      eat_eol(P);
    } else {
      return 0;
    }
  }
}

/* After a key/value pair or header: optional whitespace and comment, then newline or EOF. */
static int expect_eol(Parser *P, const char *after)
{
  char tmp[32];
  skip_ws(P);
  if (peek(P) == '#' && skip_comment(P)) return -1;
  if (peek(P) < 0) return 0;
  if (at_eol(P)) {
    eat_eol(P);
    return 0;
  }
  return fail_at(P, here(P), "expected newline or comment after %s, found %s", after,
                 describe(P, tmp, sizeof tmp));
}

static int put_utf8(Buf *b, uint32_t cp)
{
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  return buf_put(b, u, n);
}

/* Control characters other than tab are not allowed raw in strings or comments. */
static int is_ctrl(unsigned c)
{
  return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* At a multi-line string's closing run of quotes: 3 to 5 quotes close it (1 or 2 of them
 * belong to the content); fewer are content; more are an error. Returns 1 when closed. */
static int ml_quotes(Parser *P, char q, Buf *out, const char *kind)
{
  size_t n = 0;
  while (peek_at(P, n) == q) n++;
  if (n > 5) return fail_at(P, here(P), "too many quotes (%zu) at the end of a %s string", n, kind);
  size_t content = n >= 3 ? n - 3 : n;
  char qq[2] = {q, q};
  if (buf_put(out, qq, content)) return oom(P);
  P->pos += n;
  return n >= 3;
}

/* The escape at '\\' of a basic string (a line-ending backslash when ml): its text appended to
 * out, the parser moved past it. */
static int parse_escape(Parser *P, int ml, Buf *out, const char *kind, Pos open)
{
  char tmp[40];
  Pos at = here(P);
  int e = peek_at(P, 1);
  if (ml && (e == ' ' || e == '\t' || e == '\n' || e == '\r')) {
    size_t k = 1;
    while (peek_at(P, k) == ' ' || peek_at(P, k) == '\t') k++;
    int t = peek_at(P, k);
    if (t != '\n' && t != '\r')
      return fail_at(P, at,
                     "invalid escape '\\%c' in %s string (a line-ending backslash "
                     "must be followed only by whitespace)",
                     (char)e, kind);
    P->pos += k;
    for (;;) {
      if (at_eol(P))
        eat_eol(P);
      else if (peek(P) == ' ' || peek(P) == '\t')
        P->pos++;
      else
        break;
    }
    return 0;
  }
  char ch = 0;
  int ndig = 0;
  switch (e) {
  case 'b':
    ch = '\b';
    break;
  case 't':
    ch = '\t';
    break;
  case 'n':
    ch = '\n';
    break;
  case 'f':
    ch = '\f';
    break;
  case 'r':
    ch = '\r';
    break;
  case '"':
    ch = '"';
    break;
  case '\\':
    ch = '\\';
    break;
  case 'u':
    ndig = 4;
    break;
  case 'U':
    ndig = 8;
    break;
  case -1:
    return fail_at(P, open, "unterminated %s string", kind);
  default:
    if (e == '\n' || e == '\r') return fail_at(P, open, "unterminated %s string", kind);
    if (e >= 0x20 && e < 0x7f)
      return fail_at(P, at, "invalid escape '\\%c' in %s string", (char)e, kind);
    return fail_at(P, at, "invalid escape '\\' followed by %s in %s string",
                   char_repr(P, P->pos + 1, tmp, sizeof tmp), kind);
  }
  if (!ndig) {
    if (buf_putc(out, ch)) return oom(P);
    P->pos += 2;
    return 0;
  }
  uint32_t cp = 0;
  for (int k = 0; k < ndig; k++) {
    int h = peek_at(P, 2 + (size_t)k);
    if (!is_hex(h))
      return fail_at(P, at, "invalid escape: '\\%c' needs %d hex digits in %s string", (char)e,
                     ndig, kind);
    cp = cp * 16 + (uint32_t)hex_val(h);
  }
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
    return fail_at(P, at, "invalid escape: U+%04" PRIX32 " is not a Unicode scalar value", cp);
  if (put_utf8(out, cp)) return oom(P);
  P->pos += 2 + (size_t)ndig;
  return 0;
}

/* String at q ('"' basic, '\'' literal; tripled when ml); result in out (NUL-terminated,
 * length out->n). Only basic strings have escapes. */
static int parse_string(Parser *P, char q, int ml, Buf *out)
{
  const int basic = q == '"';
  const char *kind =
      basic ? (ml ? "multi-line basic" : "basic") : (ml ? "multi-line literal" : "literal");
  Pos open = here(P);
  out->n = 0;
  if (buf_put(out, "", 0)) return oom(P);
  P->pos += ml ? 3 : 1;
  if (ml && at_eol(P)) eat_eol(P);
  for (;;) {
    int c = peek(P);
    if (c < 0) return fail_at(P, open, "unterminated %s string", kind);
    if (c == q) {
      if (!ml) {
        P->pos++;
        return 0;
      }
      int r = ml_quotes(P, q, out, kind);
      if (r) return r < 0 ? -1 : 0;
      continue;
    }
    if (basic && c == '\\') {
      if (parse_escape(P, ml, out, kind, open)) return -1;
      continue;
    }
    if (c == '\n' || c == '\r') {
      if (!ml) return fail_at(P, open, "unterminated %s string", kind);
      if (buf_putc(out, '\n')) return oom(P);
      eat_eol(P);
      continue;
    }
    if (is_ctrl((unsigned)c))
      return fail_at(P, here(P), "control character U+%04X in %s string%s", c, kind,
                     basic ? " (use an escape)" : "");
    size_t st = P->pos;
    while (P->pos < P->len) {
      unsigned b = (unsigned char)P->s[P->pos];
      if (b == (unsigned char)q || (basic && b == '\\') || is_ctrl(b)) break;
      P->pos++;
    }
    if (buf_put(out, P->s + st, P->pos - st)) return oom(P);
  }
}

static void key_free(Key *k)
{
  for (size_t i = 0; i < k->n; i++) free(k->p[i].s);
  free(k->p);
  k->p = NULL;
  k->n = k->cap = 0;
}

/* A key, possibly dotted, ending before the whitespace that follows it. */
static int parse_key(Parser *P, Key *k)
{
  char tmp[40];
  for (;;) {
    Pos at = here(P);
    int c = peek(P);
    const char *s;
    size_t n;
    if (c == '"' || c == '\'') {
      if (peek_at(P, 1) == c && peek_at(P, 2) == c)
        return fail_at(P, at, "multi-line strings cannot be used as keys");
      if (parse_string(P, (char)c, 0, &P->tmp)) return -1;
      s = P->tmp.d;
      n = P->tmp.n;
    } else if (is_bare(c)) {
      size_t st = P->pos;
      while (is_bare(peek(P))) P->pos++;
      s = P->s + st;
      n = P->pos - st;
    } else {
      return fail_at(P, at, "expected a key, found %s", describe(P, tmp, sizeof tmp));
    }
    if (k->n >= SGM_TOML_MAX_DEPTH)
      return fail_at(P, at, "key has too many dotted parts (more than %d)", SGM_TOML_MAX_DEPTH);
    if (k->n == k->cap) {
      size_t cap = k->cap ? 2 * k->cap : 4;
      KeyPart *p = realloc(k->p, cap * sizeof *p);
      if (!p) return oom(P);
      k->p = p;
      k->cap = cap;
    }
    char *d = memdup0(s, n);
    if (!d) return oom(P);
    k->p[k->n].s = d;
    k->p[k->n].n = n;
    k->p[k->n].at = at;
    k->n++;
    skip_ws(P);
    if (peek(P) != '.') return 0;
    P->pos++;
    skip_ws(P);
  }
}

/* The first `upto` parts of key k, dotted, for messages (bare parts as-is, others quoted). */
static const char *key_str(const Key *k, size_t upto, char *out, size_t cap)
{
  size_t o = 0;
  out[0] = '\0';
  for (size_t i = 0; i < upto && o + 8 < cap; i++) {
    const KeyPart *p = &k->p[i];
    int bare = p->n > 0;
    for (size_t j = 0; j < p->n; j++) bare = bare && is_bare((unsigned char)p->s[j]);
    if (i) out[o++] = '.';
    if (!bare) out[o++] = '\'';
    for (size_t j = 0; j < p->n && o + 8 < cap; j++) {
      unsigned c = (unsigned char)p->s[j];
      if (c < 0x20 || c == 0x7f) c = '?';
      out[o++] = (char)c;
    }
    if (!bare) out[o++] = '\'';
  }
  if (o + 8 >= cap) {
    while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80) o--; /* no split characters */
    if (o > 0 && (unsigned char)out[o - 1] >= 0xC0) o--;
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
  return out;
}

static int parse_value(Parser *P, int depth, Node **out);

/* One intermediate part p of a dotted key or header under table t: *c is the existing value
 * (*line its line, >= 1) or, when absent, a new table with `flags` (*line = 0). */
static int key_step(Parser *P, Node *t, const KeyPart *p, unsigned flags, Node **c, int *line)
{
  size_t j = tab_find(t, p->s, p->n);
  if (j != SIZE_MAX) {
    *c = (Node *)t->v.u.tab.vals[j];
    *line = t->v.u.tab.key_line[j];
    return 0;
  }
  *line = 0;
  *c = node_alloc(P, SGM_TOML_TABLE, t->depth + 1, p->at);
  if (!*c) return -1;
  (*c)->flags = flags;
  return tab_add(P, t, p->s, p->n, *c, p->at.line);
}

/* key = value inside table t (the current [table] or an inline table). */
static int parse_keyval(Parser *P, Node *t)
{
  char ks[160], tmp[40];
  Key k = {0};
  if (parse_key(P, &k)) goto bad;
  if (peek(P) != '=') {
    fail_at(P, here(P), "expected '=' after key \"%s\", found %s", key_str(&k, k.n, ks, sizeof ks),
            describe(P, tmp, sizeof tmp));
    goto bad;
  }
  P->pos++;
  skip_ws(P);
  for (size_t i = 0; i + 1 < k.n; i++) {
    const KeyPart *p = &k.p[i];
    Node *c;
    int line;
    if (key_step(P, t, p, F_DOTTED, &c, &line)) goto bad;
    if (!line) {
      t = c;
      continue;
    }
    key_str(&k, i + 1, ks, sizeof ks);
    if (c->v.type != SGM_TOML_TABLE) {
      fail_at(P, p->at, "key \"%s\" is already defined as %s at line %d, not a table", ks,
              sgm_toml_type_name(c->v.type), line);
      goto bad;
    }
    if (c->flags & F_FROZEN) {
      fail_at(P, p->at, "cannot add keys to inline table \"%s\" (defined at line %d)", ks, line);
      goto bad;
    }
    if (!(c->flags & F_DOTTED)) {
      fail_at(P, p->at,
              "cannot add keys to table \"%s\" with dotted keys: it was defined by a [header] "
              "at line %d",
              ks, line);
      goto bad;
    }
    t = c;
  }
  const KeyPart *last = &k.p[k.n - 1];
  size_t j = tab_find(t, last->s, last->n);
  if (j != SIZE_MAX) {
    fail_at(P, last->at, "duplicate key \"%s\" (first defined at line %d)",
            key_str(&k, k.n, ks, sizeof ks), t->v.u.tab.key_line[j]);
    goto bad;
  }
  Node *v;
  if (parse_value(P, t->depth + 1, &v)) goto bad;
  if (tab_add(P, t, last->s, last->n, v, last->at.line)) goto bad;
  key_free(&k);
  return 0;
bad:
  key_free(&k);
  return -1;
}

/* Inline tables are closed once written: neither headers nor dotted keys may extend them. */
static void freeze(Node *t)
{
  t->flags |= F_FROZEN;
  for (size_t i = 0; i < t->v.u.tab.n; i++) {
    Node *c = (Node *)t->v.u.tab.vals[i];
    if (c->v.type == SGM_TOML_TABLE && !(c->flags & F_FROZEN)) freeze(c);
  }
}

static int parse_inline_table(Parser *P, int depth, Node **out)
{
  char tmp[40];
  Pos open = here(P);
  Node *t = node_alloc(P, SGM_TOML_TABLE, depth, open);
  if (!t) return -1;
  P->pos++;
  skip_ws(P);
  if (peek(P) == '}') {
    P->pos++;
    goto done;
  }
  for (;;) {
    if (at_eol(P)) {
      fail_at(P, here(P), "newline in inline table (inline tables must be on one line)");
      goto bad;
    }
    if (peek(P) < 0) {
      fail_at(P, open, "unterminated inline table (expected '}')");
      goto bad;
    }
    if (parse_keyval(P, t)) goto bad;
    skip_ws(P);
    int c = peek(P);
    if (c == ',') {
      P->pos++;
      skip_ws(P);
      if (peek(P) == '}') {
        fail_at(P, here(P), "trailing comma in inline table (not allowed in TOML 1.0)");
        goto bad;
      }
      continue;
    }
    if (c == '}') {
      P->pos++;
      break;
    }
    if (c < 0) {
      fail_at(P, open, "unterminated inline table (expected '}')");
      goto bad;
    }
    if (at_eol(P)) {
      fail_at(P, here(P), "newline in inline table (inline tables must be on one line)");
      goto bad;
    }
    fail_at(P, here(P), "expected ',' or '}' in inline table, found %s",
            describe(P, tmp, sizeof tmp));
    goto bad;
  }
done:
  freeze(t);
  *out = t;
  return 0;
bad:
  node_free(t);
  return -1;
}

static int parse_array(Parser *P, int depth, Node **out)
{
  char tmp[40];
  Pos open = here(P);
  Node *a = node_alloc(P, SGM_TOML_ARRAY, depth, open);
  if (!a) return -1;
  P->pos++;
  for (;;) {
    if (skip_blank(P)) goto bad;
    int c = peek(P);
    if (c == ']') {
      P->pos++;
      break;
    }
    if (c < 0) {
      fail_at(P, open, "unterminated array (expected ']')");
      goto bad;
    }
    Node *v;
    if (parse_value(P, depth + 1, &v)) goto bad;
    if (arr_add(P, a, v)) goto bad;
    if (skip_blank(P)) goto bad;
    c = peek(P);
    if (c == ',') {
      P->pos++;
      continue;
    }
    if (c == ']') {
      P->pos++;
      break;
    }
    if (c < 0) {
      fail_at(P, open, "unterminated array (expected ']')");
      goto bad;
    }
    fail_at(P, here(P), "expected ',' or ']' after array element, found %s",
            describe(P, tmp, sizeof tmp));
    goto bad;
  }
  *out = a;
  return 0;
bad:
  node_free(a);
  return -1;
}

/* Value of n decimal digits at byte offset j, or -1. */
static int num_at(const Parser *P, size_t j, int n)
{
  int v = 0;
  for (int k = 0; k < n; k++) {
    if (j + (size_t)k >= P->len || !is_digit((unsigned char)P->s[j + (size_t)k])) return -1;
    v = v * 10 + (P->s[j + (size_t)k] - '0');
  }
  return v;
}

static int ch_at(const Parser *P, size_t j)
{
  return j < P->len ? (unsigned char)P->s[j] : -1;
}

static int days_in_month(int y, int m)
{
  static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : d[m - 1];
}

/* RFC 3339 date-time, local date-time, local date or local time (TOML 1.0: seconds required). */
static int parse_datetime(Parser *P, Node **out)
{
  Pos at = here(P);
  size_t j = P->pos;
  int has_date = 0;
  if (ch_at(P, j + 4) == '-') {
    int y = num_at(P, j, 4), mo = num_at(P, j + 5, 2), d = num_at(P, j + 8, 2);
    if (y < 0 || mo < 0 || d < 0 || ch_at(P, j + 7) != '-' || is_digit(ch_at(P, j + 10)))
      return fail_at(P, at, "invalid date (expected YYYY-MM-DD)");
    if (mo < 1 || mo > 12) return fail_at(P, at, "invalid date: month %02d out of range", mo);
    if (d < 1 || d > days_in_month(y, mo))
      return fail_at(P, at, "invalid date: day %02d out of range for %04d-%02d", d, y, mo);
    j += 10;
    has_date = 1;
    int c = ch_at(P, j);
    if (c == 'T' || c == 't' || (c == ' ' && num_at(P, j + 1, 2) >= 0 && ch_at(P, j + 3) == ':'))
      j++;
    else
      goto done;
  }
  int h = num_at(P, j, 2), mi = num_at(P, j + 3, 2), s = num_at(P, j + 6, 2);
  if (h < 0 || mi < 0 || s < 0 || ch_at(P, j + 2) != ':' || ch_at(P, j + 5) != ':' ||
      is_digit(ch_at(P, j + 8)))
    return fail_at(P, at, "invalid time (expected HH:MM:SS)");
  if (h > 23 || mi > 59 || s > 60)
    return fail_at(P, at, "invalid time: %02d:%02d:%02d out of range", h, mi, s);
  j += 8;
  if (ch_at(P, j) == '.') {
    j++;
    if (!is_digit(ch_at(P, j)))
      return fail_at(P, at, "invalid time: expected digits after '.' in seconds");
    while (is_digit(ch_at(P, j))) j++;
  }
  if (has_date) {
    int c = ch_at(P, j);
    if (c == 'Z' || c == 'z') {
      j++;
    } else if (c == '+' || c == '-') {
      int oh = num_at(P, j + 1, 2), om = num_at(P, j + 4, 2);
      if (oh < 0 || om < 0 || ch_at(P, j + 3) != ':' || is_digit(ch_at(P, j + 6)))
        return fail_at(P, at, "invalid time offset (expected Z or +HH:MM)");
      if (oh > 23 || om > 59) return fail_at(P, at, "invalid time offset: out of range");
      j += 6;
    }
  }
done:;
  Node *n = node_alloc(P, SGM_TOML_DATETIME, 0, at);
  if (!n) return -1;
  n->v.u.s.str = memdup0(P->s + P->pos, j - P->pos);
  if (!n->v.u.s.str) {
    node_free(n);
    return oom(P);
  }
  n->v.u.s.len = j - P->pos;
  P->pos = j;
  *out = n;
  return 0;
}

/* Digits accepted by ok(), with single underscores between digits; digits go to P->tmp. */
static int scan_digits(Parser *P, int (*ok)(int), const char *what)
{
  char tmp[40];
  if (!ok(peek(P)))
    return fail_at(P, here(P), "expected a digit %s, found %s", what, describe(P, tmp, sizeof tmp));
  for (;;) {
    int c = peek(P);
    if (ok(c)) {
      if (buf_putc(&P->tmp, (char)c)) return oom(P);
      P->pos++;
    } else if (c == '_') {
      if (!ok(peek_at(P, 1)))
        return fail_at(P, here(P), "'_' in a number must be between two digits");
      P->pos++;
    } else {
      return 0;
    }
  }
}

static int parse_number(Parser *P, Node **out)
{
  Pos at = here(P);
  Buf *b = &P->tmp;
  int c = peek(P), neg = 0, sign = 0;
  b->n = 0;
  if (buf_put(b, "", 0)) return oom(P);
  if (c == '+' || c == '-') {
    sign = 1;
    neg = c == '-';
    P->pos++;
    c = peek(P);
  }
  if (c == 'i' || c == 'n') {
    int inf = P->pos + 3 <= P->len && memcmp(P->s + P->pos, "inf", 3) == 0;
    int nan = P->pos + 3 <= P->len && memcmp(P->s + P->pos, "nan", 3) == 0;
    if (!inf && !nan) return fail_at(P, at, "invalid value (expected inf or nan)");
    P->pos += 3;
    Node *n = node_alloc(P, SGM_TOML_FLOAT, 0, at);
    if (!n) return -1;
    double x = inf ? (double)INFINITY : (double)NAN;
    n->v.u.f = neg ? -x : x;
    *out = n;
    return 0;
  }
  if (!sign && c == '0' && (peek_at(P, 1) == 'x' || peek_at(P, 1) == 'o' || peek_at(P, 1) == 'b')) {
    int p = peek_at(P, 1);
    int base = p == 'x' ? 16 : p == 'o' ? 8 : 2;
    P->pos += 2;
    if (scan_digits(P, base == 16 ? is_hex : base == 8 ? is_oct : is_bin, "after the prefix"))
      return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < b->n; i++) {
      uint64_t d = (uint64_t)hex_val((unsigned char)b->d[i]);
      if (v > ((uint64_t)INT64_MAX - d) / (uint64_t)base)
        return fail_at(P, at, "integer out of range (larger than 2^63-1)");
      v = v * (uint64_t)base + d;
    }
    Node *n = node_alloc(P, SGM_TOML_INTEGER, 0, at);
    if (!n) return -1;
    n->v.u.i = (int64_t)v;
    *out = n;
    return 0;
  }
  if (!sign && is_digit(c) &&
      ((num_at(P, P->pos, 4) >= 0 && ch_at(P, P->pos + 4) == '-') ||
       (num_at(P, P->pos, 2) >= 0 && ch_at(P, P->pos + 2) == ':')))
    return parse_datetime(P, out);
  Pos int_at = here(P);
  if (scan_digits(P, is_digit, "in number")) return -1;
  if (b->n > 1 && b->d[0] == '0')
    return fail_at(P, int_at, "leading zeros are not allowed in numbers");
  int is_float = 0;
  if (peek(P) == '.') {
    is_float = 1;
    if (buf_putc(b, '.')) return oom(P);
    P->pos++;
    if (scan_digits(P, is_digit, "after '.'")) return -1;
  }
  if (peek(P) == 'e' || peek(P) == 'E') {
    is_float = 1;
    if (buf_putc(b, 'e')) return oom(P);
    P->pos++;
    if (peek(P) == '+' || peek(P) == '-') {
      if (buf_putc(b, (char)peek(P))) return oom(P);
      P->pos++;
    }
    if (scan_digits(P, is_digit, "in exponent")) return -1;
  }
  Node *n;
  if (is_float) {
    const char *dp = localeconv()->decimal_point;
    char *dot = strchr(b->d, '.');
    Buf loc = {0};
    if (dot && dp && strcmp(dp, ".") != 0) {
      if (buf_put(&loc, b->d, (size_t)(dot - b->d)) || buf_put(&loc, dp, strlen(dp)) ||
          buf_put(&loc, dot + 1, strlen(dot + 1))) {
        free(loc.d);
        return oom(P);
      }
    }
    char *end;
    double x = strtod(loc.d ? loc.d : b->d, &end);
    int whole = *end == '\0';
    free(loc.d);
    if (!whole) return fail_at(P, at, "invalid float");
    if (isinf(x)) return fail_at(P, at, "float out of range (magnitude above 1.8e308)");
    n = node_alloc(P, SGM_TOML_FLOAT, 0, at);
    if (!n) return -1;
    n->v.u.f = neg ? -x : x;
  } else {
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
    for (size_t i = 0; i < b->n; i++) {
      uint64_t d = (uint64_t)(b->d[i] - '0');
      if (v > (lim - d) / 10)
        return fail_at(P, at, "integer out of range (64-bit signed: -2^63 to 2^63-1)");
      v = v * 10 + d;
    }
    n = node_alloc(P, SGM_TOML_INTEGER, 0, at);
    if (!n) return -1;
    n->v.u.i = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
  }
  *out = n;
  return 0;
}

static int parse_string_value(Parser *P, Node **out)
{
  Pos at = here(P);
  int q = peek(P);
  int ml = peek_at(P, 1) == q && peek_at(P, 2) == q;
  if (parse_string(P, q, ml, &P->tmp)) return -1;
  Node *n = node_alloc(P, SGM_TOML_STRING, 0, at);
  if (!n) return -1;
  n->v.u.s.str = memdup0(P->tmp.d, P->tmp.n);
  if (!n->v.u.s.str) {
    node_free(n);
    return oom(P);
  }
  n->v.u.s.len = P->tmp.n;
  *out = n;
  return 0;
}

static int parse_value(Parser *P, int depth, Node **out)
{
  char tmp[40];
  Pos at = here(P);
  int c = peek(P);
  *out = NULL;
  if (c == '"' || c == '\'') return parse_string_value(P, out);
  if (c == '[') return parse_array(P, depth, out);
  if (c == '{') return parse_inline_table(P, depth, out);
  if (c == 't' || c == 'f') {
    size_t n = c == 't' ? 4 : 5;
    if (P->pos + n > P->len || memcmp(P->s + P->pos, c == 't' ? "true" : "false", n) != 0 ||
        is_bare(peek_at(P, n)))
      return fail_at(P, at, "invalid value (expected true or false; strings must be quoted)");
    Node *v = node_alloc(P, SGM_TOML_BOOLEAN, 0, at);
    if (!v) return -1;
    v->v.u.b = c == 't';
    P->pos += n;
    *out = v;
    return 0;
  }
  if (c == '+' || c == '-' || is_digit(c) || c == 'i' || c == 'n') return parse_number(P, out);
  if (c == '.') return fail_at(P, at, "invalid float: a digit is required before '.'");
  return fail_at(P, at, "expected a value, found %s", describe(P, tmp, sizeof tmp));
}

/* [a.b.c] or [[a.b.c]]; makes the named table current. */
static int parse_header(Parser *P)
{
  char ks[160];
  Pos open = here(P);
  Key k = {0};
  int aot = peek_at(P, 1) == '[';
  P->pos += aot ? 2 : 1;
  skip_ws(P);
  if (parse_key(P, &k)) goto bad;
  if (peek(P) != ']' || (aot && peek_at(P, 1) != ']')) {
    char tmp[40];
    fail_at(P, here(P), "expected '%s' to close table header [%s%s, found %s", aot ? "]]" : "]",
            aot ? "[" : "", key_str(&k, k.n, ks, sizeof ks), describe(P, tmp, sizeof tmp));
    goto bad;
  }
  P->pos += aot ? 2 : 1;
  if (expect_eol(P, "table header")) goto bad;
  Node *t = P->root;
  for (size_t i = 0; i + 1 < k.n; i++) {
    const KeyPart *p = &k.p[i];
    Node *c;
    int line;
    if (key_step(P, t, p, F_IMPLICIT, &c, &line)) goto bad;
    if (!line) {
      t = c;
      continue;
    }
    key_str(&k, i + 1, ks, sizeof ks);
    if (c->v.type == SGM_TOML_ARRAY && (c->flags & F_AOT)) {
      t = (Node *)c->v.u.arr.items[c->v.u.arr.n - 1];
    } else if (c->v.type == SGM_TOML_ARRAY) {
      fail_at(P, p->at, "cannot extend array \"%s\" (defined at line %d) with a table header", ks,
              line);
      goto bad;
    } else if (c->v.type != SGM_TOML_TABLE) {
      fail_at(P, p->at, "key \"%s\" is already defined as %s at line %d, not a table", ks,
              sgm_toml_type_name(c->v.type), line);
      goto bad;
    } else if (c->flags & F_FROZEN) {
      fail_at(P, p->at, "cannot extend inline table \"%s\" (defined at line %d)", ks, line);
      goto bad;
    } else {
      t = c;
    }
  }
  const KeyPart *last = &k.p[k.n - 1];
  size_t j = tab_find(t, last->s, last->n);
  Node *c = j == SIZE_MAX ? NULL : (Node *)t->v.u.tab.vals[j];
  int line = c ? t->v.u.tab.key_line[j] : 0;
  key_str(&k, k.n, ks, sizeof ks);
  if (!aot) {
    if (!c) {
      c = node_alloc(P, SGM_TOML_TABLE, t->depth + 1, open);
      if (!c) goto bad;
      c->flags = F_EXPLICIT;
      if (tab_add(P, t, last->s, last->n, c, open.line)) goto bad;
    } else if (c->v.type == SGM_TOML_TABLE && c->flags == F_IMPLICIT) {
      c->flags = F_EXPLICIT;
      c->v.line = open.line;
      c->v.col = open.col;
      t->v.u.tab.key_line[j] = open.line;
    } else if (c->v.type == SGM_TOML_TABLE) {
      fail_at(P, open, "table [%s] already defined at line %d%s", ks, line,
              c->flags & F_FROZEN   ? " (as an inline table)"
              : c->flags & F_DOTTED ? " (by dotted keys)"
                                    : "");
      goto bad;
    } else if (c->flags & F_AOT) {
      fail_at(P, open, "table [%s] conflicts with array of tables [[%s]] defined at line %d", ks,
              ks, line);
      goto bad;
    } else {
      fail_at(P, open, "table [%s]: key \"%s\" is already defined as %s at line %d", ks, ks,
              sgm_toml_type_name(c->v.type), line);
      goto bad;
    }
    P->cur = c;
  } else {
    if (!c) {
      c = node_alloc(P, SGM_TOML_ARRAY, t->depth + 1, open);
      if (!c) goto bad;
      c->flags = F_AOT;
      if (tab_add(P, t, last->s, last->n, c, open.line)) goto bad;
    } else if (c->v.type != SGM_TOML_ARRAY || !(c->flags & F_AOT)) {
      fail_at(P, open,
              "cannot define array of tables [[%s]]: \"%s\" is already defined as %s%s at line %d",
              ks, ks, c->v.type == SGM_TOML_ARRAY ? "static " : "", sgm_toml_type_name(c->v.type),
              line);
      goto bad;
    }
    Node *e = node_alloc(P, SGM_TOML_TABLE, c->depth + 1, open);
    if (!e) goto bad;
    e->flags = F_EXPLICIT;
    if (arr_add(P, c, e)) goto bad;
    P->cur = e;
  }
  key_free(&k);
  return 0;
bad:
  key_free(&k);
  return -1;
}

int sgm_toml_parse(const char *text, size_t len, SgmTomlValue **root, char *errbuf, size_t errlen)
{
  Parser P = {0};
  P.s = text ? text : "";
  P.len = text ? len : 0;
  P.line = 1;
  P.err = errbuf;
  P.errlen = errbuf ? errlen : 0;
  if (P.errlen) errbuf[0] = '\0';
  if (root) *root = NULL;
  if (!root) return fail_at(&P, here(&P), "no output pointer given");
  if (check_encoding(&P)) return -1;
  if (P.len >= 3 && memcmp(P.s, "\xEF\xBB\xBF", 3) == 0) P.pos = P.bol = 3;
  P.root = node_alloc(&P, SGM_TOML_TABLE, 0, here(&P));
  if (!P.root) return -1;
  P.root->flags = F_EXPLICIT;
  P.cur = P.root;
  while (P.pos < P.len) {
    skip_ws(&P);
    int c = peek(&P);
    if (c < 0) break;
    if (c == '#' || at_eol(&P)) {
      if (expect_eol(&P, "comment")) goto bad;
    } else if (c == '[') {
      if (parse_header(&P)) goto bad;
    } else {
      if (parse_keyval(&P, P.cur) || expect_eol(&P, "value")) goto bad;
    }
  }
  free(P.tmp.d);
  *root = &P.root->v;
  return 0;
bad:
  free(P.tmp.d);
  node_free(P.root);
  return -1;
}

static int dump_str(Buf *o, const char *s, size_t n)
{
  if (buf_putc(o, '"')) return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned c = (unsigned char)s[i];
    const char *e = NULL;
    switch (c) {
    case '"':
      e = "\\\"";
      break;
    case '\\':
      e = "\\\\";
      break;
    case '\b':
      e = "\\b";
      break;
    case '\t':
      e = "\\t";
      break;
    case '\n':
      e = "\\n";
      break;
    case '\f':
      e = "\\f";
      break;
    case '\r':
      e = "\\r";
      break;
    default:
      break;
    }
    int r = e                         ? buf_put(o, e, strlen(e))
            : (c < 0x20 || c == 0x7f) ? buf_printf(o, "\\u%04X", c)
                                      : buf_putc(o, (char)c);
    if (r) return -1;
  }
  return buf_putc(o, '"');
}

static int dump_key(Buf *o, const char *k, size_t n)
{
  int bare = n > 0;
  for (size_t i = 0; i < n; i++) bare = bare && is_bare((unsigned char)k[i]);
  return bare ? buf_put(o, k, n) : dump_str(o, k, n);
}

/* Shortest %g-style text that reads back as x; plain notation for exponents in [-4, 17). */
static int dump_float(Buf *o, double x)
{
  if (isnan(x)) return buf_put(o, signbit(x) ? "-nan" : "nan", signbit(x) ? 4 : 3);
  if (isinf(x)) return buf_put(o, x < 0 ? "-inf" : "inf", x < 0 ? 4 : 3);
  char t[64];
  int p = 1;
  for (; p < 17; p++) {
    snprintf(t, sizeof t, "%.*e", p - 1, x);
    if (strtod(t, NULL) == x) break;
  }
  snprintf(t, sizeof t, "%.*e", p - 1, x);
  const char *e = strchr(t, 'e');
  int ex = e ? atoi(e + 1) : 0;
  if (ex >= -4 && ex < 17 && ex + 1 > p) p = ex + 1;
  return buf_printf(o, "%.*g", p, x);
}

static int dump_node(Buf *o, Buf *path, const Node *n)
{
  const SgmTomlValue *v = &n->v;
  size_t save = path->n;
  int r = 0;
  if (v->type == SGM_TOML_TABLE && v->u.tab.n) {
    for (size_t i = 0; i < v->u.tab.n && !r; i++) {
      if (path->n && buf_putc(path, '.')) return -1;
      r = dump_key(path, v->u.tab.keys[i], n->klen[i]) ||
          dump_node(o, path, (const Node *)v->u.tab.vals[i]);
      path->n = save;
      path->d[save] = '\0';
    }
    return r ? -1 : 0;
  }
  if (v->type == SGM_TOML_ARRAY && v->u.arr.n) {
    for (size_t i = 0; i < v->u.arr.n && !r; i++) {
      r = buf_printf(path, "[%zu]", i) || dump_node(o, path, (const Node *)v->u.arr.items[i]);
      path->n = save;
      path->d[save] = '\0';
    }
    return r ? -1 : 0;
  }
  if (buf_put(o, path->d, path->n) || buf_printf(o, " = %s:", sgm_toml_type_name(v->type)))
    return -1;
  switch (v->type) {
  case SGM_TOML_STRING:
    r = dump_str(o, v->u.s.str, v->u.s.len);
    break;
  case SGM_TOML_DATETIME:
    r = buf_put(o, v->u.s.str, v->u.s.len);
    break;
  case SGM_TOML_INTEGER:
    r = buf_printf(o, "%" PRId64, v->u.i);
    break;
  case SGM_TOML_FLOAT:
    r = dump_float(o, v->u.f);
    break;
  case SGM_TOML_BOOLEAN:
    r = buf_put(o, v->u.b ? "true" : "false", v->u.b ? 4 : 5);
    break;
  case SGM_TOML_ARRAY:
    r = buf_put(o, "[]", 2);
    break;
  case SGM_TOML_TABLE:
    r = buf_put(o, "{}", 2);
    break;
  }
  return r || buf_putc(o, '\n') ? -1 : 0;
}

char *sgm_toml_dump(const SgmTomlValue *root)
{
  Buf o = {0}, path = {0};
  if (buf_put(&o, "", 0) || buf_put(&path, "", 0)) goto bad;
  if (root && !(root->type == SGM_TOML_TABLE && root->u.tab.n == 0) &&
      dump_node(&o, &path, (const Node *)root))
    goto bad;
  free(path.d);
  return o.d;
bad:
  free(o.d);
  free(path.d);
  return NULL;
}
