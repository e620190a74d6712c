package budget

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// USD is an amount of US dollars in millionths: sums of decimal strings stay
// exact, as float64 sums of 0.1 do not.
type USD int64

// microsPerDollar is how many USD units make a dollar.
const microsPerDollar = 1_000_000

// maxDollars keeps every amount, and every sum of a ledger's amounts, far
// from overflowing int64.
const maxDollars = 1_000_000_000

var decimal = regexp.MustCompile(`^([0-9]+)(?:[.]([0-9]+))?$`)

// ParseUSD reads a decimal string of dollars ("5", "0.05", the agent's
// "0.0012"). Digits past the millionth round up, so that a reported cost is
// never counted as less than it was.
func ParseUSD(s string) (USD, error) {
	m := decimal.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a decimal number of dollars", s)
	}
	whole, err := strconv.ParseInt(strings.TrimLeft(m[1], "0")+"0", 10, 64)
	if err != nil || whole/10 > maxDollars {
		return 0, fmt.Errorf("%q is more than %d dollars", s, maxDollars)
	}
	frac := m[2]
	roundUp := strings.Trim(frac[min(len(frac), 6):], "0") != ""
	frac = (frac + "000000")[:6]
	micros, _ := strconv.ParseInt(frac, 10, 64) // six digits: cannot fail
	out := USD(whole/10*microsPerDollar + micros)
	if roundUp {
		out++
	}
	return out, nil
}

// String writes the amount as ParseUSD reads it, without trailing zeros:
// "0.05", "12", "0".
func (u USD) String() string {
	s := strconv.FormatInt(int64(u/microsPerDollar), 10)
	if frac := u % microsPerDollar; frac != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	}
	return s
}
