package stsdouble

import (
	"encoding/xml"
	"net/http"
	"time"
)

// Namespace is the XML namespace of every STS 2011-06-15 response.
const Namespace = "https://sts.amazonaws.com/doc/2011-06-15/"

// APIVersion is the only Query API version STS has.
const APIVersion = "2011-06-15"

// expirationFormat is how STS writes Credentials.Expiration.
const expirationFormat = "2006-01-02T15:04:05Z"

// apiError is an STS error: the code, the message and the HTTP status real
// STS answers with.
type apiError struct {
	status  int
	fault   string // "Sender" or "Receiver"
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func senderErr(status int, code, msg string) *apiError {
	return &apiError{status: status, fault: "Sender", code: code, message: msg}
}

func errAccessDenied(msg string) *apiError {
	return senderErr(http.StatusForbidden, "AccessDenied", msg)
}
func errValidation(msg string) *apiError {
	return senderErr(http.StatusBadRequest, "ValidationError", msg)
}
func errSignature(msg string) *apiError {
	return senderErr(http.StatusForbidden, "SignatureDoesNotMatch", msg)
}
func errIncompleteSignature(msg string) *apiError {
	return senderErr(http.StatusBadRequest, "IncompleteSignature", msg)
}
func errInvalidIdentityToken(msg string) *apiError {
	return senderErr(http.StatusBadRequest, "InvalidIdentityToken", msg)
}

var (
	errMissingAuth = senderErr(http.StatusForbidden, "MissingAuthenticationToken", "Request is missing Authentication Token")
	errInvalidKey  = senderErr(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
	errExpiredKey  = senderErr(http.StatusBadRequest, "ExpiredToken", "The security token included in the request is expired")
	errBadSig      = errSignature("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
	errUnavailable = &apiError{status: http.StatusServiceUnavailable, fault: "Receiver", code: "ServiceUnavailable", message: "Service is unavailable. Please try again later."}
)

type errorResponse struct {
	XMLName   xml.Name `xml:"ErrorResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	Error     errorBody
	RequestID string `xml:"RequestId"`
}

type errorBody struct {
	Type    string
	Code    string
	Message string
}

type responseMetadata struct {
	RequestID string `xml:"RequestId"`
}

type credentialsXML struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string
	SessionToken    string
	Expiration      string
}

type assumedRoleUserXML struct {
	AssumedRoleID string `xml:"AssumedRoleId"`
	Arn           string
}

type assumeRoleResponse struct {
	XMLName xml.Name `xml:"AssumeRoleResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		Credentials      credentialsXML
		AssumedRoleUser  assumedRoleUserXML
		PackedPolicySize *int   `xml:",omitempty"`
		SourceIdentity   string `xml:",omitempty"`
	} `xml:"AssumeRoleResult"`
	ResponseMetadata responseMetadata
}

type assumeRoleWithWebIdentityResponse struct {
	XMLName xml.Name `xml:"AssumeRoleWithWebIdentityResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		Credentials                 credentialsXML
		SubjectFromWebIdentityToken string
		AssumedRoleUser             assumedRoleUserXML
		PackedPolicySize            *int `xml:",omitempty"`
		Provider                    string
		Audience                    string
	} `xml:"AssumeRoleWithWebIdentityResult"`
	ResponseMetadata responseMetadata
}

type getCallerIdentityResponse struct {
	XMLName xml.Name `xml:"GetCallerIdentityResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		Arn     string
		UserID  string `xml:"UserId"`
		Account string
	} `xml:"GetCallerIdentityResult"`
	ResponseMetadata responseMetadata
}

func formatExpiration(t time.Time) string { return t.UTC().Format(expirationFormat) }
