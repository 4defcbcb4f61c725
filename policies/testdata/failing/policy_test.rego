# One test of each outcome, for the test runner's own tests.
package coordinatord.admission_test

import data.coordinatord.admission

test_passes if {
	admission.allow with input as {"action": "ok"}
}

test_fails if {
	admission.allow with input as {"action": "not ok"}
}

test_raises_a_builtin_error if {
	admission.ratio > 0 with input as {"count": 0}
}

todo_test_is_skipped if {
	false
}
