import { describe, expect, it } from 'vitest';
import { clipText, ellipsize } from './text.js';

describe('clipText', () => {
  it('keeps text that fits and cuts the rest to the limit', () => {
    expect(clipText('harbour', 7)).toBe('harbour');
    expect(clipText('harbour', 4)).toBe('harb');
    expect(clipText('harbour', 0)).toBe('');
  });

  it('never leaves half of a surrogate pair', () => {
    // '🌊' is two code units: a cut after its first would leave a lone high surrogate.
    expect(clipText('ab🌊cd', 3)).toBe('ab');
    expect(clipText('ab🌊cd', 4)).toBe('ab🌊');
  });
});

describe('ellipsize', () => {
  it('keeps text that fits, and ends a cut one in an ellipsis within the limit', () => {
    expect(ellipsize('the lamp', 8)).toBe('the lamp');
    const cut = ellipsize('the lamp was lit', 10);
    expect(cut).toBe('the lamp…');
    expect(cut.length).toBeLessThanOrEqual(10);
  });

  it('trims the space the cut leaves and never splits an emoji', () => {
    expect(ellipsize('the lamp was lit', 5)).toBe('the…');
    const cut = ellipsize(`${'a'.repeat(8)}🌊🌊`, 10);
    expect(cut).toBe(`${'a'.repeat(8)}…`);
    expect(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/.test(cut)).toBe(false);
  });
});
