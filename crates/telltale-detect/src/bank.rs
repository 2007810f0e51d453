//! The parts of a [`Bank`](crate::Bank) that do not depend on the detector, written once:
//! `soa_bank!` for banks that keep one `Vec<f64>` per state field (the form the dense kernels
//! vectorise over), `state_vec_bank!` for banks that keep one state value per series (detectors
//! whose state holds buffers). Each expands inside an `impl Bank for …` block, beside the
//! detector's own `update` (and, for `state_vec_bank!`, `new` and `bytes_per_series`).

/// A state field stored in an `f64` column.
pub(crate) trait Column: Copy {
    fn to_column(self) -> f64;
    fn from_column(x: f64) -> Self;
}

impl Column for f64 {
    #[inline]
    fn to_column(self) -> f64 {
        self
    }
    #[inline]
    fn from_column(x: f64) -> Self {
        x
    }
}

impl Column for bool {
    #[inline]
    fn to_column(self) -> f64 {
        f64::from(u8::from(self))
    }
    #[inline]
    fn from_column(x: f64) -> Self {
        x != 0.0
    }
}

/// `new`, `add_series`, `len`, `snapshot`, `restore` and `bytes_per_series` of a bank whose
/// struct holds `params` and one `Vec<f64>` per listed field of the state (a new series starts
/// from the state's `Default`). With `, step = f`, also `update`: the series' state gathered,
/// `f(&params, &mut state, x)`, and scattered back.
macro_rules! soa_bank {
    ($state:ident { $($fields:ident),+ $(,)? }, step = $step:path) => {
        $crate::bank::soa_bank!($state { $($fields),+ });

        #[inline]
        fn update(&mut self, slot: usize, _ts: i64, x: f64, _evicted: Option<f64>) -> $crate::Scored {
            let mut s = self.snapshot(slot);
            let out = $step(&self.params, &mut s, x);
            self.restore(slot, &s);
            out
        }
    };
    ($state:ident { $($fields:ident),+ $(,)? }, step_at = $step:path) => {
        $crate::bank::soa_bank!($state { $($fields),+ });

        #[inline]
        fn update(&mut self, slot: usize, ts: i64, x: f64, _evicted: Option<f64>) -> $crate::Scored {
            let mut s = self.snapshot(slot);
            let out = $step(&self.params, &mut s, ts, x);
            self.restore(slot, &s);
            out
        }
    };
    ($state:ident { $first:ident $(, $field:ident)* $(,)? }) => {
        fn new(params: Self::Params) -> Self {
            Self { params, $first: Vec::new(), $($field: Vec::new(),)* }
        }

        fn add_series(&mut self) -> usize {
            use $crate::bank::Column as _;
            let s = $state::default();
            self.$first.push(s.$first.to_column());
            $(self.$field.push(s.$field.to_column());)*
            self.$first.len() - 1
        }

        fn len(&self) -> usize {
            self.$first.len()
        }

        fn snapshot(&self, slot: usize) -> $state {
            use $crate::bank::Column;
            $state {
                $first: Column::from_column(self.$first[slot]),
                $($field: Column::from_column(self.$field[slot]),)*
            }
        }

        fn restore(&mut self, slot: usize, s: &$state) {
            use $crate::bank::Column as _;
            self.$first[slot] = s.$first.to_column();
            $(self.$field[slot] = s.$field.to_column();)*
        }

        fn bytes_per_series(&self) -> usize {
            [stringify!($first) $(, stringify!($field))*].len() * size_of::<f64>()
        }
    };
}

/// `add_series`, `len`, `snapshot` and `restore` of a bank whose struct holds `states`, one
/// state value per series (a new series starts from the state's `Default`).
macro_rules! state_vec_bank {
    ($state:ty) => {
        fn add_series(&mut self) -> usize {
            self.states.push(<$state>::default());
            self.states.len() - 1
        }

        fn len(&self) -> usize {
            self.states.len()
        }

        fn snapshot(&self, slot: usize) -> $state {
            self.states[slot].clone()
        }

        fn restore(&mut self, slot: usize, state: &$state) {
            self.states[slot].clone_from(state);
        }
    };
}

pub(crate) use {soa_bank, state_vec_bank};
