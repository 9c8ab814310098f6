import { badInput } from '../errors.js';
import { charLength } from '../infra/text.js';

/**
 * Words as search sees them, for indexing and for queries alike: `Intl.Segmenter` word
 * segmentation (dictionary-based for Chinese, Japanese, Thai…, so CJK text splits into words), each
 * word folded: lowercased, Unicode NFKD with combining marks stripped (`Café` → `cafe`, `ﬁ` → `fi`,
 * full-width `Ａ` → `a`), recomposed (NFC, so Hangul stays syllables), `ß` → `ss`, `ς` → `σ`.
 */

// English rules, whatever the process's locale: every instance indexes and queries alike, and the
// ASCII rules below are the root rules the segmenter applies for English.
const segmenter = new Intl.Segmenter('en', { granularity: 'word' });

/** A longer word is cut to this many characters (indexed and queried alike). */
export const MAX_TERM_CHARS = 64;
/** Distinct terms indexed per message at most (a 4,000-character message rarely has 700). */
export const MAX_TERMS_PER_MESSAGE = 1000;
/** A query: at most this many characters and words. */
export const MAX_QUERY_CHARS = 200;
export const MAX_QUERY_WORDS = 8;

/** Printable ASCII without spaces: folding it is lowercasing it. */
const PLAIN_ASCII = /^[\x21-\x7e]*$/;

/** Folds one word; a compatibility decomposition with spaces (`ﷺ`) gives several terms. */
export function foldWord(word: string): string[] {
  // The common word: NFKD, mark stripping and NFC leave printable ASCII as it is, and it holds no
  // ß, ς or space; one character per code unit, so the cut is a slice.
  if (PLAIN_ASCII.test(word)) {
    const lower = word.toLowerCase();
    return lower.length === 0 ? [] : [lower.length > MAX_TERM_CHARS ? lower.slice(0, MAX_TERM_CHARS) : lower];
  }
  return foldAnyWord(word);
}

/** {@link foldWord} for any word (exported for the test that checks the ASCII shortcut against it). */
export function foldAnyWord(word: string): string[] {
  const folded = word
    .toLowerCase()
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .normalize('NFC')
    .replace(/ß/g, 'ss')
    .replace(/ς/g, 'σ');
  return folded
    .split(/\s+/u)
    .filter((t) => t.length > 0)
    .map((t) => (charLength(t) > MAX_TERM_CHARS ? [...t].slice(0, MAX_TERM_CHARS).join('') : t));
}

/** Printable ASCII, tabs and line breaks: text the ASCII word rules below segment. */
const ASCII_TEXT = /^[\t\n\r\x20-\x7e]*$/;

/**
 * A word of such text as UAX #29 (ICU's word break rules, which `Intl.Segmenter` applies) segments
 * it: letters, digits and `_` (WB5, WB8-WB10, WB13a-b), joined across one `.`, `'` or `:` between
 * two letters (WB6-WB7) and across one `.`, `'`, `,` or `;` between two digits (WB11-WB12). A lone
 * `_` is not word-like; `__` is. Checked against the segmenter on random ASCII text in
 * test/unit/search.tokens.test.ts.
 */
const ASCII_WORD = /[A-Za-z0-9_]+(?:(?:(?<=[A-Za-z])[.':](?=[A-Za-z])|(?<=[0-9])[.',;](?=[0-9]))[A-Za-z0-9_]+)*/g;

/**
 * The folded words of `text`, in order, repeats included. ASCII text is split by the rules above
 * (a few µs less per message than the segmenter, which costs ~15 µs for a sentence).
 */
export function words(text: string): string[] {
  if (!ASCII_TEXT.test(text)) return wordsBySegmenter(text);
  const out: string[] = [];
  for (const [word] of text.matchAll(ASCII_WORD)) if (word !== '_') out.push(...foldWord(word));
  return out;
}

/** {@link words} by `Intl.Segmenter` for any text (exported for the test that checks the ASCII rules against it). */
export function wordsBySegmenter(text: string): string[] {
  const out: string[] = [];
  for (const s of segmenter.segment(text)) if (s.isWordLike) out.push(...foldWord(s.segment));
  return out;
}

/** The distinct terms a message is indexed under. */
export const indexTerms = (text: string): string[] => [...new Set(words(text))].slice(0, MAX_TERMS_PER_MESSAGE);

/** A parsed query: every word must match; the last one may be a prefix of a word. */
export interface SearchQuery {
  /** Whole words, distinct. */
  exact: string[];
  /** The last word, matched as a prefix. */
  prefix: string;
}

/** Parses `searchMessages(query:)`; `BAD_USER_INPUT` on `query` when empty, too long or without words. */
export function parseQuery(query: string): SearchQuery {
  const text = query.trim();
  const length = charLength(text);
  if (length < 1 || length > MAX_QUERY_CHARS) {
    throw badInput('query', `query must be 1..${MAX_QUERY_CHARS} characters after trimming (got ${length})`);
  }
  const all = words(text);
  if (all.length === 0) throw badInput('query', 'query must contain at least one word');
  if (all.length > MAX_QUERY_WORDS) throw badInput('query', `query may hold at most ${MAX_QUERY_WORDS} words`);
  return { exact: [...new Set(all.slice(0, -1))], prefix: all.at(-1) as string };
}
