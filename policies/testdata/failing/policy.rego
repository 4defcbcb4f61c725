# A policy with a deliberate divide-by-zero, for the test runner's own tests.
package coordinatord.admission

default allow := false

allow if input.action == "ok"

ratio := 1 / input.count
