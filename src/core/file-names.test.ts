import { describe, expect, it } from 'vitest';
import { caseDistinctFileId, colonFreeFileId } from './file-names.js';

describe('caseDistinctFileId', () => {
  it('is the id itself for a lowercase id without ":" that names no device, so existing names stay', () => {
    for (const id of ['lighthouse-keepers', 'chapter-0001', 'tale.2', 'a_b', 'console', 'com10']) {
      expect(caseDistinctFileId(id)).toBe(id);
    }
  });

  it('gives ids that differ only by case names that differ whatever the case rules of the file system', () => {
    const ids = ['lighthouse-keepers', 'Lighthouse-keepers', 'LIGHTHOUSE-KEEPERS', 'lighthouse-Keepers'];
    const names = ids.map(caseDistinctFileId);
    expect(new Set(names.map((name) => name.toLowerCase())).size).toBe(ids.length);
    expect(caseDistinctFileId('Lighthouse-keepers')).toBe('=lighthouse-keepers=1');
  });

  it('never gives a name that ends in a dot, which Windows drops ("tale." would be "tale")', () => {
    for (const id of ['tale.', 'Tale.', 'con.', 'a..']) expect(caseDistinctFileId(id).endsWith('.')).toBe(false);
    expect(caseDistinctFileId('tale.')).not.toBe(caseDistinctFileId('tale'));
  });

  it('writes ":" as "~" and never gives a Windows device name', () => {
    expect(caseDistinctFileId('tx:42')).toBe('tx~42');
    expect(colonFreeFileId('Tx:42')).toBe('Tx~42');
    for (const id of ['con', 'NUL', 'com1', 'lpt9.json', 'aux:1']) {
      expect(caseDistinctFileId(id)).not.toMatch(/^(?:con|prn|aux|nul|com[0-9]|lpt[0-9])(?:\..*)?$/i);
      expect(caseDistinctFileId(id)).not.toContain(':');
    }
  });
});
