import { describe, expect, it } from "vitest";
import { argumentBounds, boundsRequest, constraintsText, isNumeric, underGrant, usesLeft } from "./bounded";

describe("boundsRequest", () => {
  const bounds = () => argumentBounds({ order: "1234", amount: "5000.00", currency: "EUR" });

  it("keeps every argument the same unless the owner caps it or frees it", () => {
    const b = bounds();
    b[0].choice = "any";
    b[1].choice = "max";
    b[1].ceiling = "6000";
    expect(boundsRequest("pa_1", 3, 30, b)).toEqual({
      request: { id: "pa_1", uses: 3, lifetime_secs: 1800, max: { amount: "6000" }, vary: ["order"] },
    });
  });

  it("refuses a ceiling below the call itself, a non-decimal ceiling, a ceiling on text, bad uses", () => {
    const b = bounds();
    b[1].choice = "max";
    b[1].ceiling = "4999.99";
    expect(boundsRequest("pa_1", 3, 30, b)).toEqual({ problem: expect.stringMatching(/below this call/) });
    b[1].ceiling = "5000";
    expect("request" in boundsRequest("pa_1", 3, 30, b)).toBe(true);
    b[1].ceiling = "6e3";
    expect(boundsRequest("pa_1", 3, 30, b)).toEqual({ problem: expect.stringMatching(/decimal/) });
    const text = bounds();
    text[2].choice = "max";
    text[2].ceiling = "1";
    expect(boundsRequest("pa_1", 3, 30, text)).toEqual({ problem: expect.stringMatching(/not a number/) });
    expect(boundsRequest("pa_1", 0, 30, bounds())).toEqual({ problem: expect.stringMatching(/Uses/) });
    expect(boundsRequest("pa_1", 2, 0, bounds())).toEqual({ problem: expect.stringMatching(/minute/) });
  });

  it("compares decimals exactly, negatives included", () => {
    const b = argumentBounds({ delta: "-5" });
    b[0].choice = "max";
    b[0].ceiling = "-4.5";
    expect("request" in boundsRequest("x", 2, 5, b)).toBe(true);
    b[0].ceiling = "-5.01";
    expect("problem" in boundsRequest("x", 2, 5, b)).toBe(true);
  });
});

describe("display", () => {
  it("says what is numeric, what a grant allows and how many uses are left", () => {
    expect([isNumeric(12), isNumeric("12.50"), isNumeric("1e3"), isNumeric("EUR")]).toEqual([true, true, false, false]);
    expect(constraintsText('{"uses":3,"max":{"amount":"6000"},"equal":{"currency":"EUR"},"vary":["order"]}')).toEqual([
      "amount at most 6000",
      "order may be anything",
      'currency = "EUR"',
    ]);
    const g = { uses: 5, used: 2, released: 1 } as Parameters<typeof usesLeft>[0];
    expect(usesLeft(g)).toBe(2);
  });
});

describe("underGrant", () => {
  it("names the grant a call was released under, or the one made from the review", () => {
    expect(underGrant({ source: "broker", bounded_grant: "g1" })).toBe("g1");
    expect(underGrant({ jti: "g2", exp: 1, bounded: { constraints: {} } })).toBe("g2");
    expect(underGrant({ jti: "single-use", exp: 1 })).toBeNull();
    expect(underGrant(null)).toBeNull();
  });
});
