;; reporter.wat: a healthy reporter module written by hand against ABI v1.
;;
;; It answers every job result and lease event with one record for the sink
;; "results" whose data is the event itself:
;;
;;   {"records":[{"sink":"results","data":<the event>}]}
;;
;; without parsing it: coordinatord_alloc hands out a buffer at 1024 that is
;; preceded by the record's opening text (a data segment ending at 1024), the
;; host writes the event there, and the handler appends "}]}" and outputs the
;; whole range. On a lease event it also logs one line at info level.
(module
  (import "coordinatord" "output" (func $output (param i32 i32)))
  (import "coordinatord" "log" (func $log (param i32 i32 i32)))

  (memory (export "memory") 1)

  ;; [987, 1024): the opening text, 37 bytes, right before the buffer.
  (data (i32.const 987) "{\"records\":[{\"sink\":\"results\",\"data\":")
  ;; [16, 19): the closing text.
  (data (i32.const 16) "}]}")
  ;; [32, 51): a log line.
  (data (i32.const 32) "lease event handled")

  (global $buf i32 (i32.const 1024))

  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: the buffer at 1024, grown to hold size bytes and the
  ;; closing text; 0 if memory cannot grow that far.
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (local $end i32)
    (if (i32.gt_u (local.get $size) (i32.const 0x7fff0000))
      (then (return (i32.const 0))))
    (local.set $end (i32.add (i32.add (global.get $buf) (local.get $size)) (i32.const 3)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.sub
                  (i32.shr_u (i32.add (local.get $end) (i32.const 0xffff)) (i32.const 16))
                  (memory.size)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.get $buf))

  ;; $emit outputs the record around the event at [ptr, ptr+len).
  (func $emit (param $ptr i32) (param $len i32)
    (memory.copy (i32.add (local.get $ptr) (local.get $len)) (i32.const 16) (i32.const 3))
    (call $output
      (i32.sub (local.get $ptr) (i32.const 37))
      (i32.add (local.get $len) (i32.const 40))))

  (func (export "coordinatord_on_job_result") (param $ptr i32) (param $len i32) (result i32)
    (call $emit (local.get $ptr) (local.get $len))
    (i32.const 0))

  (func (export "coordinatord_on_lease_event") (param $ptr i32) (param $len i32) (result i32)
    (call $log (i32.const 1) (i32.const 32) (i32.const 19))
    (call $emit (local.get $ptr) (local.get $len))
    (i32.const 0))
)
