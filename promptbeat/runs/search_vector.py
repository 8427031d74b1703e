"""How an output becomes its full-text search vector: shared by the model, its migration and the search."""

# The text-search configuration: 'simple' lowercases words and keeps them as written, in every
# language. A language configuration would stem one language and mangle the others, and PostgreSQL
# has none for Chinese (see CJK below).
TS_CONFIG = "simple"
# Outputs are indexed up to this many characters: a tsvector holds at most 1 MB, and a longer output
# must still be stored (the generated column would otherwise make the run's final write fail).
INDEXED_CHARS = 100_000
# Chinese and Japanese are written without spaces: PostgreSQL's parser would make one "word" of a whole
# sentence. Each such character is indexed as a word of its own, and a run of them in a search is a
# phrase of those characters, adjacent and in order: a substring match.
# Escapes both Python's re and PostgreSQL's regular expressions read: kana, CJK ideographs (with extension A)
# and compatibility ideographs.
CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
# The generated column's expression, shared by the model and its migration.
SEARCH_VECTOR_SQL = (f"to_tsvector('{TS_CONFIG}'::regconfig, "
                     f"regexp_replace(left(coalesce(output, ''), {INDEXED_CHARS}), '([{CJK}])', ' \\1 ', 'g'))")
