'use strict';

// Write timestamps: microseconds since the Unix epoch as BigInt, strictly increasing within
// this process.
//
// The clock is process.hrtime.bigint() anchored to Date.now() (microsecond resolution),
// never behind the wall clock and re-anchored when more than a second ahead of it.
// Successive stamps are at least STAMP_SPACING µs apart: a request's first write to a
// session carries the request's own stamp, and its later writes to the same session in
// the same request (an explicit save() and then the automatic one, a save then a destroy)
// carry stamp + 1, + 2, … up to + STAMP_SPACING - 1, so they still come after its own
// earlier writes without overtaking any request that began later.

const STAMP_SPACING = 8n;
const REANCHOR_US = 1000000n;

let anchorUs = BigInt(Date.now()) * 1000n;
let anchorHr = process.hrtime.bigint();
let last = 0n;

function clockMicros() {
  const wall = BigInt(Date.now()) * 1000n;
  const hr = process.hrtime.bigint();
  let t = anchorUs + (hr - anchorHr) / 1000n;
  if (t < wall) {
    // Never behind the wall clock (whose milliseconds the anchor truncated).
    anchorUs += wall - t;
    t = wall;
  } else if (t - wall > REANCHOR_US) {
    // The wall clock was set back: follow it (nextStamp still never goes back).
    anchorUs = wall;
    anchorHr = hr;
    t = wall;
  }
  return t;
}

/** A new stamp (BigInt µs), strictly greater than every stamp this process gave before. */
function nextStamp() {
  let t = clockMicros();
  if (t < last + STAMP_SPACING) t = last + STAMP_SPACING;
  last = t;
  return t;
}

/** The stamp as the decimal string sent in X-Write-Timestamp. */
function stampString(stamp) {
  return BigInt(stamp).toString();
}

module.exports = { nextStamp, stampString, STAMP_SPACING };
