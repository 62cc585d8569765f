//! A local Google Sheets v4 + Drive v3 + OAuth 2 token endpoint emulator.
//!
//! It is not a mock of postsub's code: it is an HTTP server on 127.0.0.1 that speaks Google's REST
//! paths and JSON, so the real `google-sheets4`, `google-drive3` and `yup-oauth2` clients work
//! against it unchanged:
//! - Sheets: `hub.base_url(emulator.sheets_base_url())` (URLs are `base + "v4/…"`);
//! - Drive: `hub.base_url(emulator.drive_base_url())` (URLs are `base + "files/…"`);
//! - auth: a service-account key from [`SheetsEmulator::service_account_key`], whose `token_uri`
//!   is the emulator's token endpoint.
//!
//! State lives in memory. Tests can inject failures (429/5xx) and latency, and inspect what the
//! code under test did. Where the emulator is simpler than Google is listed on
//! [`SheetsEmulator`].

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    Form, Json, Router,
    body::Bytes,
    extract::{
        Path, Query, Request, State,
        rejection::{FormRejection, PathRejection, QueryRejection},
    },
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, post},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Test-only RSA key of the emulator's service account. yup-oauth2 signs its JWTs with it; the
/// emulator never checks the signature and no real Google project knows this key.
const SERVICE_ACCOUNT_PEM: &str = include_str!("emulator-service-account.pem");
const CLIENT_EMAIL: &str = "postsub-test@emulator.iam.gserviceaccount.com";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_PREFIX: &str = "emulator-token-";
/// Grid size of a new tab, as on Google.
const DEFAULT_ROWS: usize = 1000;
const DEFAULT_COLUMNS: usize = 26;

type Shared = Arc<Mutex<EmulatorState>>;
type Params = HashMap<String, String>;

/// A Google Sheets v4 + Drive v3 + token endpoint on 127.0.0.1 (random port), for tests.
///
/// Implemented: `spreadsheets.create`, `spreadsheets.get`, `spreadsheets.batchUpdate`
/// (`addSheet` and `deleteDimension` of rows), `spreadsheets.values.get`, `.update`,
/// `.batchUpdate` and `.append`, Drive
/// `permissions.create`, and the service-account token grant. Every Sheets/Drive call needs a
/// bearer token this emulator issued; errors use Google's JSON shape
/// `{"error":{"code","message","status"}}`.
///
/// Simpler than Google: values are stored as sent (`USER_ENTERED` is accepted but strings are
/// not parsed into numbers, dates or formulas); reads honour `valueRenderOption` as Google does
/// (`FORMATTED_VALUE`, the default, turns numbers and booleans into strings) but apply no number
/// formats; append finds the "table" as the rows from the range's first row down to the tab's
/// last non-empty row; writes may run past the range they were given (the grid grows); JWT
/// signatures are not verified.
///
/// The server lives as long as the Tokio runtime that started it. Clones share the same state.
#[derive(Clone)]
pub struct SheetsEmulator {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    origin: String,
    state: Shared,
}

impl SheetsEmulator {
    /// Binds 127.0.0.1 on a free port and serves the emulator on the current Tokio runtime.
    pub async fn start() -> Self {
        let state = Shared::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sheets emulator");
        let origin = format!("http://{}", listener.local_addr().expect("local addr"));
        let app = router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { origin, state }
    }

    /// Base URL for `google_sheets4::Sheets::base_url`: `http://127.0.0.1:PORT/`.
    pub fn sheets_base_url(&self) -> String {
        format!("{}/", self.origin)
    }

    /// Base URL for `google_drive3::DriveHub::base_url`: `http://127.0.0.1:PORT/drive/v3/`.
    pub fn drive_base_url(&self) -> String {
        format!("{}/drive/v3/", self.origin)
    }

    /// The token endpoint: `http://127.0.0.1:PORT/token`.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.origin)
    }

    /// A service-account key (the JSON Google hands out) whose `token_uri` is this emulator.
    /// Its `private_key` is a real RSA key, so yup-oauth2 can sign its JWT with it.
    pub fn service_account_key(&self) -> Value {
        // The URLs a service-account flow never uses also point here, so nothing reaches Google.
        json!({
            "type": "service_account",
            "project_id": "emulator",
            "private_key_id": "emulator-key",
            "private_key": SERVICE_ACCOUNT_PEM,
            "client_email": CLIENT_EMAIL,
            "client_id": "1",
            "auth_uri": format!("{}/auth", self.origin),
            "token_uri": self.token_uri(),
            "auth_provider_x509_cert_url": format!("{}/certs", self.origin),
            "client_x509_cert_url": format!("{}/certs/{CLIENT_EMAIL}", self.origin),
            "universe_domain": "googleapis.com",
        })
    }

    /// Writes [`Self::service_account_key`] to `dir/emulator-service-account.json` (for
    /// `GOOGLE_APPLICATION_CREDENTIALS`) and returns the file's path.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_service_account_key(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("emulator-service-account.json");
        let text = serde_json::to_string_pretty(&self.service_account_key()).expect("key is JSON");
        std::fs::write(&path, text).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
        path
    }

    /// From now on, every `n`-th Sheets/Drive call (token calls excluded) fails before touching
    /// any state, with the next status of `statuses` in rotation, e.g. `fail_every(3, &[429,
    /// 500])`. `n == 0` or no statuses turns this off.
    ///
    /// # Panics
    /// If a status is not an HTTP error status (400–599).
    pub fn fail_every(&self, n: usize, statuses: &[u16]) {
        let rotation = statuses.iter().copied().map(error_status).collect();
        self.lock().faults.periodic = Periodic {
            every: n,
            rotation,
            calls: 0,
            failures: 0,
        };
    }

    /// The next `count` Sheets/Drive calls fail with `status`, before touching any state. These
    /// come on top of [`Self::fail_every`] and take precedence over it.
    ///
    /// # Panics
    /// If `status` is not an HTTP error status (400–599).
    pub fn fail_next(&self, count: usize, status: u16) {
        let status = error_status(status);
        self.lock()
            .faults
            .scripted
            .extend(std::iter::repeat_n(status, count));
    }

    /// Every Sheets/Drive call (failing ones included) waits this long before answering.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// `(id, title)` of every spreadsheet, in creation order.
    pub fn spreadsheets(&self) -> Vec<(String, String)> {
        self.lock()
            .spreadsheets
            .iter()
            .map(|s| (s.id.clone(), s.title.clone()))
            .collect()
    }

    /// The titles of a spreadsheet's tabs, in order.
    ///
    /// # Panics
    /// If the spreadsheet does not exist.
    pub fn tabs(&self, spreadsheet_id: &str) -> Vec<String> {
        let state = self.lock();
        let spreadsheet = state
            .spreadsheet(spreadsheet_id)
            .unwrap_or_else(|_| panic!("no spreadsheet {spreadsheet_id}"));
        spreadsheet
            .tabs
            .iter()
            .map(|tab| tab.title.clone())
            .collect()
    }

    /// The whole grid of a tab (matched case-insensitively, like Google) as stored: numbers and
    /// booleans keep their JSON type, cells never written read as `""`, trailing empty cells and
    /// rows are trimmed.
    ///
    /// # Panics
    /// If the spreadsheet or the tab does not exist.
    pub fn values(&self, spreadsheet_id: &str, tab: &str) -> Vec<Vec<Value>> {
        let state = self.lock();
        let spreadsheet = state
            .spreadsheet(spreadsheet_id)
            .unwrap_or_else(|_| panic!("no spreadsheet {spreadsheet_id}"));
        let tab = spreadsheet
            .tab_index(tab)
            .map(|index| &spreadsheet.tabs[index])
            .unwrap_or_else(|| panic!("no tab {tab:?} in spreadsheet {spreadsheet_id}"));
        render(tab.read(tab.whole()), false)
    }

    /// The permissions created on a spreadsheet through Drive, as answered to the client.
    ///
    /// # Panics
    /// If the spreadsheet does not exist.
    pub fn permissions(&self, spreadsheet_id: &str) -> Vec<Value> {
        self.lock()
            .spreadsheet(spreadsheet_id)
            .unwrap_or_else(|_| panic!("no spreadsheet {spreadsheet_id}"))
            .permissions
            .clone()
    }

    /// Requests to the token endpoint, including refused ones.
    pub fn token_requests(&self) -> usize {
        self.lock().token_requests
    }

    /// Sheets/Drive calls received, including refused and injected failures.
    pub fn api_calls(&self) -> usize {
        self.lock().api_calls
    }

    /// Successful `values.append` calls.
    pub fn append_calls(&self) -> usize {
        self.lock().append_calls
    }

    /// Rows written by successful `values.append` calls.
    pub fn appended_rows(&self) -> usize {
        self.lock().appended_rows
    }

    fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        lock(&self.state)
    }
}

fn lock(state: &Shared) -> MutexGuard<'_, EmulatorState> {
    state.lock().expect("sheets emulator state lock")
}

/// Checks a status a test asks to inject.
fn error_status(status: u16) -> StatusCode {
    match StatusCode::from_u16(status) {
        Ok(code) if code.is_client_error() || code.is_server_error() => code,
        _ => panic!("{status} is not an HTTP error status"),
    }
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Default)]
struct EmulatorState {
    spreadsheets: Vec<Spreadsheet>,
    tokens_issued: usize,
    token_requests: usize,
    api_calls: usize,
    append_calls: usize,
    appended_rows: usize,
    faults: Faults,
    latency: Duration,
}

impl EmulatorState {
    fn spreadsheet(&self, id: &str) -> Result<&Spreadsheet, GoogleError> {
        self.spreadsheets
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(GoogleError::entity_not_found)
    }

    fn spreadsheet_mut(&mut self, id: &str) -> Result<&mut Spreadsheet, GoogleError> {
        self.spreadsheets
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(GoogleError::entity_not_found)
    }

    /// Whether `headers` carry a bearer token this emulator issued.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), GoogleError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(GoogleError::new(
                StatusCode::UNAUTHORIZED,
                "Request is missing required authentication credential. Expected OAuth 2 access \
                 token, login cookie or other valid authentication credential.",
            ));
        };
        let issued = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| token.strip_prefix(TOKEN_PREFIX))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| (1..=self.tokens_issued).contains(&n));
        if issued {
            Ok(())
        } else {
            Err(GoogleError::new(
                StatusCode::UNAUTHORIZED,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential.",
            ))
        }
    }
}

/// Failures tests asked for.
#[derive(Default)]
struct Faults {
    /// Statuses for the next calls, in order (`fail_next`).
    scripted: VecDeque<StatusCode>,
    periodic: Periodic,
}

/// `fail_every`: every `every`-th call fails with the next status of `rotation`.
#[derive(Default)]
struct Periodic {
    every: usize,
    rotation: Vec<StatusCode>,
    /// Calls seen since `fail_every`.
    calls: usize,
    /// Periodic failures so far: the position in `rotation`.
    failures: usize,
}

impl Faults {
    /// The status the current call must fail with, if any.
    fn next(&mut self) -> Option<StatusCode> {
        // Count the call toward `fail_every` even when a scripted failure wins, so "every n-th
        // call" stays true to the calls the client made.
        let periodic = self.periodic.tick();
        self.scripted.pop_front().or(periodic)
    }
}

impl Periodic {
    fn tick(&mut self) -> Option<StatusCode> {
        if self.every == 0 || self.rotation.is_empty() {
            return None;
        }
        self.calls += 1;
        if !self.calls.is_multiple_of(self.every) {
            return None;
        }
        let status = self.rotation[self.failures % self.rotation.len()];
        self.failures += 1;
        Some(status)
    }
}

#[derive(Clone)]
struct Spreadsheet {
    id: String,
    title: String,
    /// In index order; never empty.
    tabs: Vec<Tab>,
    permissions: Vec<Value>,
}

#[derive(Clone)]
struct Tab {
    sheet_id: i64,
    title: String,
    /// Grid size (`gridProperties`); cells outside it cannot be addressed.
    rows: usize,
    columns: usize,
    /// Row-major; rows may be ragged, missing cells and `Null` are empty.
    cells: Vec<Vec<Value>>,
}

impl Spreadsheet {
    /// A spreadsheet as `spreadsheets.create` makes it: the given tabs, or one "Sheet1".
    fn create(body: SpreadsheetBody) -> Result<Self, GoogleError> {
        let mut spreadsheet = Self {
            id: spreadsheet_id(),
            title: body
                .properties
                .title
                .unwrap_or_else(|| "Untitled spreadsheet".into()),
            tabs: Vec::new(),
            permissions: Vec::new(),
        };
        let titles = if body.sheets.is_empty() {
            vec![None]
        } else {
            body.sheets
                .into_iter()
                .map(|s| s.properties.title)
                .collect()
        };
        for title in titles {
            spreadsheet
                .add_tab(title)
                .map_err(GoogleError::invalid_argument)?;
        }
        Ok(spreadsheet)
    }

    /// The `Spreadsheet` resource as Google returns it.
    fn to_json(&self) -> Value {
        let sheets: Vec<Value> = self
            .tabs
            .iter()
            .enumerate()
            .map(|(index, tab)| json!({ "properties": tab.properties(index) }))
            .collect();
        json!({
            "spreadsheetId": self.id,
            "properties": {
                "title": self.title,
                "locale": "en_US",
                "autoRecalc": "ON_CHANGE",
                "timeZone": "Etc/GMT",
            },
            "sheets": sheets,
            "spreadsheetUrl": format!("https://docs.google.com/spreadsheets/d/{}/edit", self.id),
        })
    }

    /// Adds a tab at the end and returns its index, or why it cannot: titles are unique,
    /// case-insensitively.
    fn add_tab(&mut self, title: Option<String>) -> Result<usize, String> {
        let title = match title.filter(|t| !t.is_empty()) {
            Some(title) => title,
            None => self.free_tab_title(),
        };
        if self.tab_index(&title).is_some() {
            return Err(format!(
                "A sheet with the name \"{title}\" already exists. Please enter another name."
            ));
        }
        let sheet_id = if self.tabs.is_empty() {
            0
        } else {
            self.free_sheet_id()
        };
        self.tabs.push(Tab {
            sheet_id,
            title,
            rows: DEFAULT_ROWS,
            columns: DEFAULT_COLUMNS,
            cells: Vec::new(),
        });
        Ok(self.tabs.len() - 1)
    }

    /// Google's default name for a new tab: the first free "SheetN".
    fn free_tab_title(&self) -> String {
        let mut n = self.tabs.len() + 1;
        while self.tab_index(&format!("Sheet{n}")).is_some() {
            n += 1;
        }
        format!("Sheet{n}")
    }

    /// A random positive sheet id not used yet (Google's are random too).
    fn free_sheet_id(&self) -> i64 {
        loop {
            let id = (Uuid::new_v4().as_u128() % 2_000_000_000) as i64 + 1;
            if self.tabs.iter().all(|tab| tab.sheet_id != id) {
                return id;
            }
        }
    }

    fn tab_index(&self, title: &str) -> Option<usize> {
        let title = title.to_lowercase();
        self.tabs
            .iter()
            .position(|tab| tab.title.to_lowercase() == title)
    }

    /// Resolves an A1 range (`Sheet1`, `Sheet1!A1:C3`, `'My Tab'!A:A`, `A1:B2` on the first
    /// tab, …) to a tab and a block of its grid.
    fn resolve(&self, range: &str) -> Result<Target, GoogleError> {
        let unparsable =
            || GoogleError::invalid_argument(format!("Unable to parse range: {range}"));
        let (tab, area) = match split_range(range).ok_or_else(unparsable)? {
            (Some(name), area) => (self.tab_index(&name).ok_or_else(unparsable)?, area),
            // A bare name is a tab if one has that name, else an area of the first tab.
            (None, area) => match area.and_then(|text| self.tab_index(text)) {
                Some(tab) => (tab, None),
                None => (0, area),
            },
        };
        let area = match area {
            Some(text) => Area::parse(text).ok_or_else(unparsable)?,
            None => Area::WHOLE,
        };
        let tab_ref = &self.tabs[tab];
        let block = tab_ref.block(area).ok_or_else(|| {
            GoogleError::invalid_argument(format!(
                "Range ({range}) exceeds grid limits. Max rows: {}, max columns: {}",
                tab_ref.rows, tab_ref.columns
            ))
        })?;
        Ok(Target { tab, block })
    }

    /// The target and row-major values of a `values.update` / `values.append` body.
    fn value_range(
        &self,
        range: &str,
        body: ValueRangeBody,
    ) -> Result<(Target, Vec<Vec<Value>>), GoogleError> {
        let target = self.resolve(range)?;
        if let Some(body_range) = &body.range
            && self.resolve(body_range)? != target
        {
            return Err(GoogleError::invalid_argument(format!(
                "Invalid ValueRange.range: \"{body_range}\" does not match the range in the \
                 URL, \"{range}\"."
            )));
        }
        let dimension = enum_param(
            body.major_dimension.as_deref(),
            "major_dimension",
            DIMENSIONS,
            Dimension::Rows,
        )?;
        check_cells(&body.values)?;
        let values = match dimension {
            Dimension::Rows => body.values,
            Dimension::Columns => transpose(&body.values),
        };
        Ok((target, values))
    }
}

impl Tab {
    /// `SheetProperties` as Google returns them.
    fn properties(&self, index: usize) -> Value {
        json!({
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": index,
            "sheetType": "GRID",
            "gridProperties": { "rowCount": self.rows, "columnCount": self.columns },
        })
    }

    fn whole(&self) -> Block {
        Block {
            top: 0,
            left: 0,
            bottom: self.rows - 1,
            right: self.columns - 1,
        }
    }

    /// The block an area covers: open ends stop at the edge of the grid; `None` when the area
    /// reaches past the grid (Google refuses those).
    fn block(&self, area: Area) -> Option<Block> {
        let whole = self.whole();
        let block = Block {
            top: area.top,
            left: area.left,
            bottom: area.bottom.unwrap_or(whole.bottom),
            right: area.right.unwrap_or(whole.right),
        };
        let inside = block.top <= block.bottom
            && block.left <= block.right
            && block.bottom <= whole.bottom
            && block.right <= whole.right;
        inside.then_some(block)
    }

    /// The cells of `block`, trailing empty cells and rows trimmed; gaps are `Null`.
    fn read(&self, block: Block) -> Vec<Vec<Value>> {
        let mut rows: Vec<Vec<Value>> = (block.top..=block.bottom)
            .map_while(|r| self.cells.get(r))
            .map(|row| {
                (block.left..=block.right)
                    .map_while(|c| row.get(c).cloned())
                    .collect()
            })
            .collect();
        trim(&mut rows);
        rows
    }

    /// Writes `values` with their first cell at (`top`, `left`), growing the grid as needed.
    /// `null` cells are skipped, as on Google.
    fn write(&mut self, top: usize, left: usize, values: &[Vec<Value>]) -> Written {
        for (i, row) in values.iter().enumerate() {
            for (j, value) in row.iter().enumerate().filter(|(_, v)| !v.is_null()) {
                let (r, c) = (top + i, left + j);
                if self.cells.len() <= r {
                    self.cells.resize_with(r + 1, Vec::new);
                }
                let cells = &mut self.cells[r];
                if cells.len() <= c {
                    cells.resize(c + 1, Value::Null);
                }
                cells[c] = value.clone();
            }
        }
        let height = values.len();
        let width = values.iter().map(Vec::len).max().unwrap_or(0);
        self.rows = self.rows.max(top + height);
        self.columns = self.columns.max(left + width);
        Written {
            block: Block {
                top,
                left,
                bottom: top + height.max(1) - 1,
                right: left + width.max(1) - 1,
            },
            rows: height,
            columns: width,
            cells: values.iter().flatten().filter(|v| !v.is_null()).count(),
        }
    }

    /// The data `values.append` appends to: rows from `block.top` to the last non-empty row,
    /// columns from `block.left` to the last non-empty one. `None` when those rows are empty.
    fn table(&self, block: Block) -> Option<Block> {
        let filled = |r: &usize| self.cells[*r].iter().any(|c| !is_empty(c));
        let first = (block.top..self.cells.len()).find(filled)?;
        let last = (first..self.cells.len()).rev().find(filled)?;
        let right = self.cells[first..=last]
            .iter()
            .filter_map(|row| row.iter().rposition(|c| !is_empty(c)))
            .max()
            .unwrap_or(block.left)
            .max(block.left);
        Some(Block {
            top: first,
            left: block.left,
            bottom: last,
            right,
        })
    }
}

/// Where a request's range points.
#[derive(Debug, PartialEq)]
struct Target {
    /// Index into `Spreadsheet::tabs`.
    tab: usize,
    block: Block,
}

/// What a write touched, for `UpdateValuesResponse`.
struct Written {
    block: Block,
    rows: usize,
    columns: usize,
    cells: usize,
}

impl Written {
    fn to_json(&self, spreadsheet_id: &str, title: &str) -> Value {
        json!({
            "spreadsheetId": spreadsheet_id,
            "updatedRange": self.block.a1(title),
            "updatedRows": self.rows,
            "updatedColumns": self.columns,
            "updatedCells": self.cells,
        })
    }
}

fn is_empty(cell: &Value) -> bool {
    cell.is_null() || cell.as_str() == Some("")
}

/// Drops trailing empty cells of each row, then trailing empty rows, as Google's reads do.
fn trim(rows: &mut Vec<Vec<Value>>) {
    for row in rows.iter_mut() {
        while row.last().is_some_and(is_empty) {
            row.pop();
        }
    }
    while rows.last().is_some_and(Vec::is_empty) {
        rows.pop();
    }
}

fn transpose(rows: &[Vec<Value>]) -> Vec<Vec<Value>> {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    (0..width)
        .map(|c| {
            rows.iter()
                .map(|row| row.get(c).cloned().unwrap_or(Value::Null))
                .collect()
        })
        .collect()
}

/// Cells as a read answers them: gaps become `""`; `formatted` (Google's `FORMATTED_VALUE`)
/// also turns numbers and booleans into the strings a cell with no number format shows.
fn render(rows: Vec<Vec<Value>>, formatted: bool) -> Vec<Vec<Value>> {
    let cell = |value: Value| match value {
        Value::Null => Value::from(""),
        Value::Bool(b) if formatted => Value::from(if b { "TRUE" } else { "FALSE" }),
        Value::Number(n) if formatted => Value::from(format_number(&n)),
        other => other,
    };
    rows.into_iter()
        .map(|row| row.into_iter().map(cell).collect())
        .collect()
}

fn format_number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        // 3.0 shows as "3"; below 1e15 an f64 holds every integer exactly.
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// Google accepts only scalar cells.
fn check_cells(values: &[Vec<Value>]) -> Result<(), GoogleError> {
    for (i, row) in values.iter().enumerate() {
        for (j, value) in row.iter().enumerate() {
            if value.is_array() || value.is_object() {
                return Err(GoogleError::invalid_argument(format!(
                    "Invalid values[{i}][{j}]: {value}"
                )));
            }
        }
    }
    Ok(())
}

fn spreadsheet_id() -> String {
    // Google's ids are 44 URL-safe characters.
    let bytes = [Uuid::new_v4().into_bytes(), Uuid::new_v4().into_bytes()].concat();
    format!("1{}", URL_SAFE_NO_PAD.encode(bytes))
}

// ---------------------------------------------------------------------------------------------
// A1 notation

/// An area of a tab as written in A1 notation, 0-based, ends inclusive; `None` ends are open
/// (`A:A` has no bottom, `1:1` no right end).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Area {
    top: usize,
    left: usize,
    bottom: Option<usize>,
    right: Option<usize>,
}

/// A closed block of cells, 0-based, ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block {
    top: usize,
    left: usize,
    bottom: usize,
    right: usize,
}

/// One side of an A1 area: `B3`, `B` or `3`.
struct Corner {
    column: Option<usize>,
    row: Option<usize>,
}

impl Area {
    const WHOLE: Area = Area {
        top: 0,
        left: 0,
        bottom: None,
        right: None,
    };

    /// Parses `A1`, `A1:C3`, `A:C`, `1:3`, `A2:Z`; `None` when it is not A1 notation.
    fn parse(text: &str) -> Option<Area> {
        let Some((start, end)) = text.split_once(':') else {
            let cell = Corner::parse(text)?;
            let (column, row) = (cell.column?, cell.row?);
            return Some(Area {
                top: row,
                left: column,
                bottom: Some(row),
                right: Some(column),
            });
        };
        let (start, end) = (Corner::parse(start)?, Corner::parse(end)?);
        // `A:…` needs a column at the end and `1:…` a row, as on Google.
        if (start.row.is_none() && end.column.is_none())
            || (start.column.is_none() && end.row.is_none())
        {
            return None;
        }
        let (top, bottom) = ordered(start.row.unwrap_or(0), end.row);
        let (left, right) = ordered(start.column.unwrap_or(0), end.column);
        Some(Area {
            top,
            left,
            bottom,
            right,
        })
    }
}

/// Puts a reversed pair (`C3:A1`) in order, as Google does.
fn ordered(start: usize, end: Option<usize>) -> (usize, Option<usize>) {
    match end {
        Some(end) if end < start => (end, Some(start)),
        _ => (start, end),
    }
}

impl Corner {
    fn parse(text: &str) -> Option<Corner> {
        let split = text
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(text.len());
        let (letters, digits) = text.split_at(split);
        // Three letters reach column ZZZ (18,278), past any real grid.
        if letters.len() > 3 || (letters.is_empty() && digits.is_empty()) {
            return None;
        }
        let column = (!letters.is_empty()).then(|| column_index(letters));
        let row = if digits.is_empty() {
            None
        } else {
            Some(row_index(digits)?)
        };
        Some(Corner { column, row })
    }
}

/// `A` → 0, `Z` → 25, `AA` → 26 (letters already checked to be ASCII, at most three).
fn column_index(letters: &str) -> usize {
    letters.bytes().fold(0, |n, b| {
        n * 26 + usize::from(b.to_ascii_uppercase() - b'A') + 1
    }) - 1
}

/// `1` → 0; `None` for `0`, signs or more than eight digits.
fn row_index(digits: &str) -> Option<usize> {
    if digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok()?.checked_sub(1)
}

fn column_letters(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index + 1;
    while n > 0 {
        letters.push(b'A' + ((n - 1) % 26) as u8);
        n = (n - 1) / 26;
    }
    letters.iter().rev().map(|&b| char::from(b)).collect()
}

impl Block {
    /// `Sheet1!A1:C3`, or `Sheet1!A1` for one cell, quoting the title when Google would.
    fn a1(&self, title: &str) -> String {
        let start = format!("{}{}", column_letters(self.left), self.top + 1);
        if (self.top, self.left) == (self.bottom, self.right) {
            format!("{}!{start}", quote_title(title))
        } else {
            let end = format!("{}{}", column_letters(self.right), self.bottom + 1);
            format!("{}!{start}:{end}", quote_title(title))
        }
    }
}

/// `Sheet1` stays bare; `My Tab`, `A1` or `It's` become `'My Tab'`, `'A1'`, `'It''s'`.
fn quote_title(title: &str) -> String {
    let plain = title.starts_with(|c: char| c.is_ascii_alphabetic())
        && title.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && Corner::parse(title).is_none();
    if plain {
        title.to_owned()
    } else {
        format!("'{}'", title.replace('\'', "''"))
    }
}

/// Splits `'Tab'!A1` / `Tab!A1` / `'Tab'` into the tab name and the area text. A range with no
/// `!` and no quotes comes back as `(None, text)`: a tab name or an area, depending on the tabs.
fn split_range(range: &str) -> Option<(Option<String>, Option<&str>)> {
    if let Some(quoted) = range.strip_prefix('\'') {
        let (name, rest) = unquote(quoted)?;
        return match rest {
            "" => Some((Some(name), None)),
            _ => Some((Some(name), Some(rest.strip_prefix('!')?))),
        };
    }
    match range.rsplit_once('!') {
        Some((name, area)) => Some((Some(name.to_owned()), Some(area))),
        None => Some((None, Some(range))),
    }
}

/// Reads a quoted tab name (opening quote already consumed; `''` is a quote) and returns it with
/// the text after the closing quote.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            name.push(c);
        } else if chars.next_if(|&(_, next)| next == '\'').is_some() {
            name.push('\'');
        } else {
            return Some((name, &text[i + 1..]));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error as Google's APIs answer it: `{"error":{"code","message","status"}}`.
#[derive(Debug, PartialEq)]
struct GoogleError {
    code: StatusCode,
    message: String,
}

impl GoogleError {
    fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn entity_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Requested entity was not found.")
    }

    /// A call the emulator does not serve: Google answers unknown methods with 404 too.
    fn unimplemented(method: &Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("The emulator does not implement {method} {path}."),
        )
    }

    /// A failure a test injected, with the message Google sends for that status.
    fn injected(code: StatusCode) -> Self {
        let message = match code.as_u16() {
            429 => {
                "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per \
                 minute per user' of service 'sheets.googleapis.com' for consumer \
                 'project_number:emulator'."
            }
            500 => "Internal error encountered.",
            503 => "The service is currently unavailable.",
            504 => "The request timed out. Please try again.",
            403 => "The caller does not have permission",
            401 => "Request had invalid authentication credentials.",
            _ => code.canonical_reason().unwrap_or("Injected failure."),
        };
        Self::new(code, message)
    }
}

/// The `google.rpc.Code` name Google puts in `status` for an HTTP status.
fn rpc_status(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

impl IntoResponse for GoogleError {
    fn into_response(self) -> Response {
        let body = json!({ "error": {
            "code": self.code.as_u16(),
            "message": self.message,
            "status": rpc_status(self.code),
        }});
        let mut response = (self.code, Json(body)).into_response();
        if self.code == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<PathRejection> for GoogleError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid_argument(rejection.body_text())
    }
}

impl From<QueryRejection> for GoogleError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid_argument(rejection.body_text())
    }
}

/// Parses a JSON request body; an empty body reads as `{}`.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, GoogleError> {
    let body = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|err| {
        GoogleError::invalid_argument(format!("Invalid JSON payload received. {err}"))
    })
}

/// Reads an enum-valued parameter: missing takes `default`, an unknown value is a 400.
fn enum_param<T: Copy>(
    value: Option<&str>,
    field: &str,
    choices: &[(&str, T)],
    default: T,
) -> Result<T, GoogleError> {
    let Some(value) = value else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            GoogleError::invalid_argument(format!("Invalid value at '{field}', \"{value}\""))
        })
}

#[derive(Clone, Copy)]
enum Dimension {
    Rows,
    Columns,
}

const DIMENSIONS: &[(&str, Dimension)] = &[
    ("ROWS", Dimension::Rows),
    ("COLUMNS", Dimension::Columns),
    ("DIMENSION_UNSPECIFIED", Dimension::Rows),
];

/// Writes need `valueInputOption`; the emulator stores `RAW` and `USER_ENTERED` values alike.
fn require_input_option(query: &Params) -> Result<(), GoogleError> {
    match query.get("valueInputOption").map(String::as_str) {
        None | Some("INPUT_VALUE_OPTION_UNSPECIFIED") => Err(GoogleError::invalid_argument(
            "'valueInputOption' is required but not specified",
        )),
        value => enum_param(
            value,
            "value_input_option",
            &[("RAW", ()), ("USER_ENTERED", ())],
            (),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn router(state: Shared) -> Router {
    let api = Router::new()
        .route(
            "/v4/spreadsheets",
            post(create_spreadsheet).fallback(not_implemented),
        )
        .route("/v4/spreadsheets/{*call}", any(spreadsheet_call))
        .route(
            "/drive/v3/files/{file_id}/permissions",
            post(create_permission).fallback(not_implemented),
        )
        .fallback(not_implemented)
        .layer(middleware::from_fn_with_state(state.clone(), gate));
    Router::new()
        .route("/token", post(issue_token))
        .merge(api)
        .with_state(state)
}

/// Runs before every Sheets/Drive call: counts it, waits the injected latency, checks the bearer
/// token, then fails the call if a fault is due, all before the call touches any state.
async fn gate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let latency = {
        let mut state = lock(&state);
        state.api_calls += 1;
        state.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let refusal = {
        let mut state = lock(&state);
        match state.authenticate(request.headers()) {
            Ok(()) => state.faults.next().map(GoogleError::injected),
            Err(error) => Some(error),
        }
    };
    match refusal {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

async fn not_implemented(method: Method, uri: Uri) -> GoogleError {
    GoogleError::unimplemented(&method, uri.path())
}

/// `POST /token`: the OAuth 2 JWT-bearer grant of service accounts. The JWT's signature is not
/// checked, only its shape.
async fn issue_token(
    State(state): State<Shared>,
    form: Result<Form<Params>, FormRejection>,
) -> Response {
    let mut state = lock(&state);
    state.token_requests += 1;
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return oauth_error("invalid_request", &rejection.body_text()),
    };
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let assertion = form.get("assertion").map(String::as_str).unwrap_or("");
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|part| part.is_empty()) {
        return oauth_error("invalid_grant", "Invalid JWT.");
    }
    state.tokens_issued += 1;
    Json(json!({
        "access_token": format!("{TOKEN_PREFIX}{}", state.tokens_issued),
        "expires_in": 3600,
        "token_type": "Bearer",
    }))
    .into_response()
}

/// An error as OAuth 2 token endpoints answer it (RFC 6749 §5.2).
fn oauth_error(error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

#[derive(Deserialize, Default)]
struct SpreadsheetBody {
    #[serde(default)]
    properties: TitleBody,
    #[serde(default)]
    sheets: Vec<SheetBody>,
}

#[derive(Deserialize, Default)]
struct TitleBody {
    title: Option<String>,
}

#[derive(Deserialize)]
struct SheetBody {
    #[serde(default)]
    properties: TitleBody,
}

#[derive(Deserialize)]
struct BatchUpdateBody {
    #[serde(default)]
    requests: Vec<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValueRangeBody {
    range: Option<String>,
    major_dimension: Option<String>,
    #[serde(default)]
    values: Vec<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchValuesBody {
    value_input_option: Option<String>,
    #[serde(default)]
    data: Vec<ValueRangeBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteDimensionBody {
    range: DimensionRangeBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DimensionRangeBody {
    #[serde(default)]
    sheet_id: i64,
    dimension: Option<String>,
    start_index: Option<usize>,
    end_index: Option<usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PermissionBody {
    role: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    email_address: Option<String>,
    domain: Option<String>,
}

/// `POST /v4/spreadsheets`: `spreadsheets.create`.
async fn create_spreadsheet(
    State(state): State<Shared>,
    body: Bytes,
) -> Result<Json<Value>, GoogleError> {
    let spreadsheet = Spreadsheet::create(parse_body(&body)?)?;
    let reply = spreadsheet.to_json();
    lock(&state).spreadsheets.push(spreadsheet);
    Ok(Json(reply))
}

/// A call under `/v4/spreadsheets/`, after percent-decoding: the path holds A1 ranges with `!`,
/// `'` and `:` that clients encode only in part, so routing happens here rather than in axum.
enum Call<'a> {
    Get { id: &'a str },
    BatchUpdate { id: &'a str },
    GetValues { id: &'a str, range: &'a str },
    UpdateValues { id: &'a str, range: &'a str },
    BatchUpdateValues { id: &'a str },
    AppendValues { id: &'a str, range: &'a str },
}

impl<'a> Call<'a> {
    fn parse(method: &Method, path: &'a str) -> Option<Self> {
        if let (&Method::POST, Some(id)) = (method, path.strip_suffix("/values:batchUpdate")) {
            return Some(Call::BatchUpdateValues { id });
        }
        if let Some((id, range)) = path.split_once("/values/") {
            return match (method, range.strip_suffix(":append")) {
                (&Method::POST, Some(range)) => Some(Call::AppendValues { id, range }),
                (&Method::GET, None) => Some(Call::GetValues { id, range }),
                (&Method::PUT, None) => Some(Call::UpdateValues { id, range }),
                _ => None,
            };
        }
        match (method, path.strip_suffix(":batchUpdate")) {
            (&Method::POST, Some(id)) => Some(Call::BatchUpdate { id }),
            (&Method::GET, None) if !path.contains(['/', ':']) => Some(Call::Get { id: path }),
            _ => None,
        }
    }
}

/// `/v4/spreadsheets/{id}…`: get, batchUpdate and the `values` calls.
async fn spreadsheet_call(
    State(state): State<Shared>,
    method: Method,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, GoogleError> {
    let (Path(path), Query(query)) = (path?, query?);
    let call = Call::parse(&method, &path)
        .ok_or_else(|| GoogleError::unimplemented(&method, &format!("/v4/spreadsheets/{path}")))?;
    let mut state = lock(&state);
    let reply = match call {
        Call::Get { id } => state.spreadsheet(id)?.to_json(),
        Call::BatchUpdate { id } => batch_update(state.spreadsheet_mut(id)?, parse_body(&body)?)?,
        Call::GetValues { id, range } => get_values(state.spreadsheet(id)?, range, &query)?,
        Call::UpdateValues { id, range } => update_values(
            state.spreadsheet_mut(id)?,
            range,
            &query,
            parse_body(&body)?,
        )?,
        Call::BatchUpdateValues { id } => {
            batch_update_values(state.spreadsheet_mut(id)?, parse_body(&body)?)?
        }
        Call::AppendValues { id, range } => {
            let (reply, rows) = append_values(
                state.spreadsheet_mut(id)?,
                range,
                &query,
                parse_body(&body)?,
            )?;
            state.append_calls += 1;
            state.appended_rows += rows;
            reply
        }
    };
    Ok(Json(reply))
}

/// `spreadsheets.batchUpdate`: all requests apply or none, as on Google.
fn batch_update(
    spreadsheet: &mut Spreadsheet,
    body: BatchUpdateBody,
) -> Result<Value, GoogleError> {
    if body.requests.is_empty() {
        return Err(GoogleError::invalid_argument(
            "Must specify at least one request.",
        ));
    }
    let mut draft = spreadsheet.clone();
    let replies = body
        .requests
        .iter()
        .enumerate()
        .map(|(index, request)| apply_request(&mut draft, index, request))
        .collect::<Result<Vec<_>, _>>()?;
    *spreadsheet = draft;
    Ok(json!({ "spreadsheetId": spreadsheet.id, "replies": replies }))
}

/// `spreadsheets.values.batchUpdate`: every range is written, or none.
fn batch_update_values(
    spreadsheet: &mut Spreadsheet,
    body: BatchValuesBody,
) -> Result<Value, GoogleError> {
    let mut query = Params::new();
    if let Some(option) = body.value_input_option {
        query.insert("valueInputOption".into(), option);
    }
    require_input_option(&query)?;
    let mut draft = spreadsheet.clone();
    let mut responses = Vec::new();
    for (index, range) in body.data.into_iter().enumerate() {
        let name = range.range.clone().ok_or_else(|| {
            GoogleError::invalid_argument(format!("Invalid data[{index}]: No range specified."))
        })?;
        let (target, values) = draft.value_range(&name, range)?;
        let tab = &mut draft.tabs[target.tab];
        let written = tab.write(target.block.top, target.block.left, &values);
        responses.push(written.to_json(&draft.id, &tab.title));
    }
    *spreadsheet = draft;
    Ok(json!({
        "spreadsheetId": spreadsheet.id,
        "totalUpdatedRows": responses.iter().filter_map(|r| r["updatedRows"].as_u64()).sum::<u64>(),
        "responses": responses,
    }))
}

/// A batchUpdate's `deleteDimension` of rows: removes them, moving the rows below up.
fn delete_rows(
    spreadsheet: &mut Spreadsheet,
    value: &Value,
    invalid: impl Fn(&str) -> GoogleError,
) -> Result<Value, GoogleError> {
    let body: DeleteDimensionBody = serde_json::from_value(value.clone())
        .map_err(|err| invalid(&format!("Invalid JSON payload received. {err}")))?;
    let range = body.range;
    if range.dimension.as_deref() != Some("ROWS") {
        return Err(invalid("the emulator deletes ROWS only."));
    }
    let tab = spreadsheet
        .tabs
        .iter_mut()
        .find(|tab| tab.sheet_id == range.sheet_id)
        .ok_or_else(|| invalid(&format!("No grid with id: {}", range.sheet_id)))?;
    let (start, end) = (
        range.start_index.unwrap_or(0),
        range.end_index.unwrap_or(tab.rows),
    );
    if start >= end || end > tab.rows {
        return Err(invalid(&format!(
            "Invalid range: rows {start} to {end} of a sheet with {} rows.",
            tab.rows
        )));
    }
    if end - start >= tab.rows {
        return Err(invalid("You can't delete all the rows on the sheet."));
    }
    if start < tab.cells.len() {
        tab.cells.drain(start..end.min(tab.cells.len()));
    }
    tab.rows -= end - start;
    Ok(json!({}))
}

/// One `Request` of a batchUpdate; `addSheet` and `deleteDimension` are emulated.
fn apply_request(
    spreadsheet: &mut Spreadsheet,
    index: usize,
    request: &Map<String, Value>,
) -> Result<Value, GoogleError> {
    // `at` names the offending field after `requests[i]`, as Google's messages do.
    let invalid = |at: &str, reason: &str| {
        GoogleError::invalid_argument(format!("Invalid requests[{index}]{at}: {reason}"))
    };
    let mut kinds = request.iter();
    let (kind, value) = match (kinds.next(), kinds.next()) {
        (Some(only), None) => only,
        (None, _) => return Err(invalid("", "No request set.")),
        (Some(_), Some(_)) => return Err(invalid("", "oneof field 'kind' is already set.")),
    };
    let at = format!(".{kind}");
    if kind == "deleteDimension" {
        return delete_rows(spreadsheet, value, |reason| invalid(&at, reason));
    }
    if kind != "addSheet" {
        return Err(invalid(&at, "unsupported by the emulator."));
    }
    let add: SheetBody = serde_json::from_value(value.clone())
        .map_err(|err| invalid(&at, &format!("Invalid JSON payload received. {err}")))?;
    let tab = spreadsheet
        .add_tab(add.properties.title)
        .map_err(|reason| invalid(&at, &reason))?;
    Ok(json!({ "addSheet": { "properties": spreadsheet.tabs[tab].properties(tab) } }))
}

/// `spreadsheets.values.get`.
fn get_values(
    spreadsheet: &Spreadsheet,
    range: &str,
    query: &Params,
) -> Result<Value, GoogleError> {
    let target = spreadsheet.resolve(range)?;
    let param = |name: &str| query.get(name).map(String::as_str);
    let dimension = enum_param(
        param("majorDimension"),
        "major_dimension",
        DIMENSIONS,
        Dimension::Rows,
    )?;
    let formatted = enum_param(
        param("valueRenderOption"),
        "value_render_option",
        &[
            ("FORMATTED_VALUE", true),
            ("UNFORMATTED_VALUE", false),
            ("FORMULA", false),
        ],
        true,
    )?;
    let tab = &spreadsheet.tabs[target.tab];
    let mut values = tab.read(target.block);
    let dimension_name = match dimension {
        Dimension::Rows => "ROWS",
        Dimension::Columns => {
            values = transpose(&values);
            trim(&mut values);
            "COLUMNS"
        }
    };
    let mut reply = json!({
        "range": target.block.a1(&tab.title),
        "majorDimension": dimension_name,
    });
    // Like Google, an empty range has no "values" at all.
    if !values.is_empty() {
        reply["values"] = render(values, formatted).into();
    }
    Ok(reply)
}

/// `spreadsheets.values.update`: writes from the range's top-left cell.
fn update_values(
    spreadsheet: &mut Spreadsheet,
    range: &str,
    query: &Params,
    body: ValueRangeBody,
) -> Result<Value, GoogleError> {
    require_input_option(query)?;
    let (target, values) = spreadsheet.value_range(range, body)?;
    let tab = &mut spreadsheet.tabs[target.tab];
    let written = tab.write(target.block.top, target.block.left, &values);
    Ok(written.to_json(&spreadsheet.id, &tab.title))
}

/// `spreadsheets.values.append`: writes below the table found from the range's first row, from
/// the range's first column. Returns the reply and the number of rows appended.
fn append_values(
    spreadsheet: &mut Spreadsheet,
    range: &str,
    query: &Params,
    body: ValueRangeBody,
) -> Result<(Value, usize), GoogleError> {
    require_input_option(query)?;
    let insert_rows = enum_param(
        query.get("insertDataOption").map(String::as_str),
        "insert_data_option",
        &[("OVERWRITE", false), ("INSERT_ROWS", true)],
        false,
    )?;
    let (target, values) = spreadsheet.value_range(range, body)?;
    let tab = &mut spreadsheet.tabs[target.tab];
    let table = tab.table(target.block);
    let top = table.map_or(target.block.top, |table| table.bottom + 1);
    if insert_rows {
        // INSERT_ROWS adds rows to the grid even when empty rows were free below the table.
        tab.rows += values.len();
    }
    let written = tab.write(top, target.block.left, &values);
    let mut reply = json!({
        "spreadsheetId": spreadsheet.id,
        "updates": written.to_json(&spreadsheet.id, &tab.title),
    });
    if let Some(table) = table {
        reply["tableRange"] = table.a1(&tab.title).into();
    }
    Ok((reply, values.len()))
}

/// `POST /drive/v3/files/{fileId}/permissions`: Drive `permissions.create` on a spreadsheet.
async fn create_permission(
    State(state): State<Shared>,
    file_id: Result<Path<String>, PathRejection>,
    query: Result<Query<Params>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, GoogleError> {
    let (Path(file_id), Query(query)) = (file_id?, query?);
    let permission = permission(parse_body(&body)?, &query)?;
    let mut state = lock(&state);
    let spreadsheet = state
        .spreadsheets
        .iter_mut()
        .find(|s| s.id == file_id)
        .ok_or_else(|| {
            GoogleError::new(StatusCode::NOT_FOUND, format!("File not found: {file_id}."))
        })?;
    spreadsheet.permissions.push(permission.clone());
    Ok(Json(permission))
}

/// Checks a permission request the way Drive does and builds the `Permission` it answers.
fn permission(body: PermissionBody, query: &Params) -> Result<Value, GoogleError> {
    const ROLES: &[&str] = &[
        "owner",
        "organizer",
        "fileOrganizer",
        "writer",
        "commenter",
        "reader",
    ];
    let invalid = |message: &str| GoogleError::invalid_argument(message);
    let role = body
        .role
        .ok_or_else(|| invalid("The permission role field is required."))?;
    if !ROLES.contains(&role.as_str()) {
        return Err(invalid(&format!(
            "The provided role \"{role}\" is not valid."
        )));
    }
    if role == "owner" && query.get("transferOwnership").map(String::as_str) != Some("true") {
        return Err(GoogleError::new(
            StatusCode::FORBIDDEN,
            "The transferOwnership parameter must be enabled when the permission role is 'owner'.",
        ));
    }
    let kind = body
        .kind
        .ok_or_else(|| invalid("The permission type field is required."))?;
    let mut permission = json!({
        "kind": "drive#permission",
        "id": format!("{:020}", Uuid::new_v4().as_u128() % 10u128.pow(20)),
        "type": kind,
        "role": role,
    });
    match kind.as_str() {
        "user" | "group" => {
            let email = body
                .email_address
                .ok_or_else(|| invalid("The permission emailAddress field is required."))?;
            permission["emailAddress"] = email.into();
        }
        "domain" => {
            let domain = body
                .domain
                .ok_or_else(|| invalid("The permission domain field is required."))?;
            permission["domain"] = domain.into();
        }
        "anyone" => {}
        _ => {
            return Err(invalid(&format!(
                "The provided type \"{kind}\" is not valid."
            )));
        }
    }
    Ok(permission)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(text: &str) -> Option<(usize, usize, Option<usize>, Option<usize>)> {
        Area::parse(text).map(|a| (a.top, a.left, a.bottom, a.right))
    }

    #[test]
    fn parses_a1_areas() {
        assert_eq!(area("A1"), Some((0, 0, Some(0), Some(0))));
        assert_eq!(area("b3"), Some((2, 1, Some(2), Some(1))));
        assert_eq!(area("A1:C3"), Some((0, 0, Some(2), Some(2))));
        assert_eq!(area("C3:A1"), Some((0, 0, Some(2), Some(2))));
        assert_eq!(area("A:A"), Some((0, 0, None, Some(0))));
        assert_eq!(area("A:C"), Some((0, 0, None, Some(2))));
        assert_eq!(area("1:1"), Some((0, 0, Some(0), None)));
        assert_eq!(area("A2:Z"), Some((1, 0, None, Some(25))));
        assert_eq!(area("AA10"), Some((9, 26, Some(9), Some(26))));
        for bad in [
            "", "A", "1", "A0", "A1:", ":A1", "AAAA1", "A+1", "A1B", "1:A", "A:1", "A1:B:C",
        ] {
            assert_eq!(area(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn splits_tab_names() {
        assert_eq!(split_range("Sheet1"), Some((None, Some("Sheet1"))));
        assert_eq!(
            split_range("Sheet1!A1"),
            Some((Some("Sheet1".into()), Some("A1")))
        );
        assert_eq!(
            split_range("'My Tab'!A1:B2"),
            Some((Some("My Tab".into()), Some("A1:B2")))
        );
        assert_eq!(split_range("'It''s'"), Some((Some("It's".into()), None)));
        assert_eq!(
            split_range("'Q!A'!A1"),
            Some((Some("Q!A".into()), Some("A1")))
        );
        assert_eq!(split_range("'open"), None);
        assert_eq!(split_range("'Tab'A1"), None);
    }

    #[test]
    fn formats_ranges_like_google() {
        let block = Block {
            top: 0,
            left: 0,
            bottom: 2,
            right: 27,
        };
        assert_eq!(block.a1("Sheet1"), "Sheet1!A1:AB3");
        assert_eq!(block.a1("My Tab"), "'My Tab'!A1:AB3");
        assert_eq!(block.a1("It's"), "'It''s'!A1:AB3");
        assert_eq!(block.a1("AB1"), "'AB1'!A1:AB3");
        let cell = Block {
            top: 4,
            left: 701,
            bottom: 4,
            right: 701,
        };
        assert_eq!(cell.a1("Data"), "Data!ZZ5");
        for index in [0, 25, 26, 701, 702, 18_277] {
            assert_eq!(column_index(&column_letters(index)), index);
        }
    }

    #[test]
    fn resolves_ranges_against_tabs() {
        let mut spreadsheet = Spreadsheet::create(SpreadsheetBody::default()).expect("create");
        spreadsheet.add_tab(Some("My Tab".into())).expect("add tab");
        let resolve = |range: &str| spreadsheet.resolve(range).map(|t| (t.tab, t.block));
        let whole = spreadsheet.tabs[0].whole();
        assert_eq!(resolve("Sheet1"), Ok((0, whole)));
        assert_eq!(resolve("sheet1"), Ok((0, whole)));
        assert_eq!(resolve("'My Tab'!B2").map(|t| t.0), Ok(1));
        assert_eq!(
            resolve("A1:B2").map(|t| t.1.bottom),
            Ok(1),
            "bare areas are on the first tab"
        );
        assert_eq!(resolve("Sheet1!A:A").map(|t| t.1.bottom), Ok(999));
        let err = resolve("Nope!A1").expect_err("unknown tab");
        assert_eq!(err.message, "Unable to parse range: Nope!A1");
        let err = resolve("Sheet1!A1001").expect_err("past the grid");
        assert_eq!(err.code, StatusCode::BAD_REQUEST);
        assert!(
            err.message.contains("exceeds grid limits"),
            "{}",
            err.message
        );
    }

    #[test]
    fn rotates_periodic_faults_and_prefers_scripted_ones() {
        let mut faults = Faults {
            scripted: VecDeque::from([StatusCode::SERVICE_UNAVAILABLE]),
            periodic: Periodic {
                every: 2,
                rotation: vec![
                    StatusCode::TOO_MANY_REQUESTS,
                    StatusCode::INTERNAL_SERVER_ERROR,
                ],
                ..Periodic::default()
            },
        };
        let seen: Vec<Option<u16>> = (0..6).map(|_| faults.next().map(|s| s.as_u16())).collect();
        assert_eq!(
            seen,
            [Some(503), Some(429), None, Some(500), None, Some(429)]
        );
    }
}
