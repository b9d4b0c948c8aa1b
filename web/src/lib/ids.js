// Record identity and ordering data (SCHEMA.md section 2): ULIDs from the `ulid` package, dates in the one
// stored form. Mirrors chatdoc/ids.py.
import { ulid } from 'ulid'

const ULID_RE = /^[0-7][0-9A-HJKMNP-TV-Z]{25}$/ // `$` in JS never matches before a final newline
const DATE_RE = /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$/

/** A fresh ULID whose time part is `ms` (default: now). */
export const newUlid = (ms = Date.now()) => ulid(ms)

/** The one stored date form, `2026-01-10T12:00:00.000Z` (fixed width: string order is time order). */
export const formatDate = (ms) => new Date(ms).toISOString()

/** Milliseconds of a stored date. */
export const parseDate = (date) => Date.parse(date)

export const isUlid = (value) => typeof value === 'string' && ULID_RE.test(value)
export const isDate = (value) => typeof value === 'string' && DATE_RE.test(value)
