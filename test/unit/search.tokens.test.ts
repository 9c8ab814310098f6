import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/errors.js';
import { foldAnyWord, foldWord, indexTerms, MAX_TERM_CHARS, parseQuery, words, wordsBySegmenter } from '../../src/search/search.tokens.js';

/** The tokenizer: segmentation, folding, index terms and query parsing (pure logic). */

/** The error `fn` throws, which must be an AppError. */
function thrown(fn: () => unknown): AppError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }
  throw new Error('nothing was thrown');
}

describe('folding a word', () => {
  it('should lowercase and strip accents', () => {
    expect(foldWord('Café')).toEqual(['cafe']);
    expect(foldWord('RÉSUMÉ')).toEqual(['resume']);
    expect(foldWord('naïve')).toEqual(['naive']);
    expect(foldWord('Ångström')).toEqual(['angstrom']);
  });

  it('should fold compatibility forms, sharp s, final sigma and dotted capital I', () => {
    expect(foldWord('ﬁle')).toEqual(['file']);
    expect(foldWord('ＡＢＣ')).toEqual(['abc']);
    expect(foldWord('Straße')).toEqual(['strasse']);
    expect(foldWord('ΟΔΟΣ')).toEqual(foldWord('οδοσ'));
    expect(foldWord('İstanbul')).toEqual(['istanbul']);
  });

  it('should keep Hangul syllables and split a decomposition that holds spaces', () => {
    expect(foldWord('한국어')).toEqual(['한국어']);
    expect(foldWord('ﷺ').length).toBeGreaterThan(1);
  });

  it('should cut a very long word', () => {
    expect(foldWord('a'.repeat(500))).toEqual(['a'.repeat(MAX_TERM_CHARS)]);
  });

  it('should fold printable ASCII (its shortcut) exactly as any word is folded', () => {
    const ascii = Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => String.fromCharCode(0x21 + i));
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    const samples = ['', 'Hello', 'ABC123', "don't", 'e-mail', 'X'.repeat(MAX_TERM_CHARS + 5), ascii.join('')];
    for (let i = 0; i < 2000; i++) {
      samples.push(Array.from({ length: 1 + (next() % 80) }, () => ascii[next() % ascii.length]).join(''));
    }
    for (const word of samples) expect(foldWord(word), word).toEqual(foldAnyWord(word));
  });
});

describe('splitting text into words', () => {
  it('should keep word-like segments only', () => {
    expect(words("Hello, world! Don't panic: 3.14 😀")).toEqual(['hello', 'world', "don't", 'panic', '3.14']);
  });

  it('should segment Chinese and Japanese text without spaces', () => {
    expect(words('我爱北京天安门')).toEqual(['我', '爱', '北京', '天安门']);
    expect(words('東京都に住んでいます')).toContain('東京');
  });

  it('should split ASCII text (its shortcut) exactly as Intl.Segmenter does', () => {
    // Every character class UAX #29 gives ASCII (letters, digits, `_`, the mid-word `.` `'` `:`,
    // the mid-number `,` `;`, `"`, spaces and line breaks), then the rest of printable ASCII.
    const edges = "aZ9_.':,;\" \t\n\r";
    const printable = Array.from({ length: 0x7e - 0x20 + 1 }, (_, i) => String.fromCharCode(0x20 + i)).join('');
    let seed = 11;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    const samples = ['', '_', '__', 'a._b', 'e.g.', '3.14.15', "can't", 'a:b:c', '1,000;2', printable, 'Y'.repeat(MAX_TERM_CHARS + 3)];
    for (const alphabet of [edges, edges + 'b1-#', printable]) {
      for (let i = 0; i < 3000; i++) {
        samples.push(Array.from({ length: 1 + (next() % 24) }, () => alphabet[next() % alphabet.length]).join(''));
      }
    }
    for (const text of samples) expect(words(text), JSON.stringify(text)).toEqual(wordsBySegmenter(text));
  });

  it('should index each distinct term once', () => {
    expect(indexTerms('the cat and THE hat')).toEqual(['the', 'cat', 'and', 'hat']);
  });
});

describe('parsing a query', () => {
  it('should make the last word the prefix and the others exact', () => {
    expect(parseQuery('  Red APPle  pi ')).toEqual({ exact: ['red', 'apple'], prefix: 'pi' });
    expect(parseQuery('go go')).toEqual({ exact: ['go'], prefix: 'go' });
    expect(parseQuery('café')).toEqual({ exact: [], prefix: 'cafe' });
  });

  it('should refuse empty, wordless, too long and too wordy queries', () => {
    for (const q of ['', '   ', '?!', 'x'.repeat(201), 'a b c d e f g h i']) {
      const e = thrown(() => parseQuery(q));
      expect(e.extensions).toMatchObject({ code: 'BAD_USER_INPUT', field: 'query' });
    }
    expect(parseQuery('x'.repeat(200)).prefix).toHaveLength(MAX_TERM_CHARS);
  });
});
