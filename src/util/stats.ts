/** The arithmetic mean; NaN for an empty list. */
export function mean(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** The mean of the finite values only (NaN, ±Infinity left out); NaN when there are none. */
export function finiteMean(xs: readonly number[]): number {
  return mean(xs.filter(Number.isFinite));
}
